"""Progress of long commands, on stderr only (stdout stays the result: a table, CSV or JSON).

    with Progress("playbook scorecard") as progress:
        with progress.phase("evaluating the rules over the accounts"):
            ...
        progress.update("writing rows", done=n)      # callback style: a new name starts a new phase

Nothing is shown for a command that ends within `DELAY` seconds. After that,
every phase running or starting is shown: on a terminal as a rich bar (a
spinner without a total), which disappears when the command ends; otherwise
as one line per phase ("playbook import: importing accounts.csv ..."), so
a CI log says what a slow step was doing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TextIO

# Seconds a command runs before its progress shows (tests set 0).
DELAY = 2.0


class Progress:
    """Phases of one command run, shown once the run has lasted `DELAY` seconds."""

    def __init__(self, command: str, stream: TextIO | None = None) -> None:
        self.command = command
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.phase_name: str | None = None
        self.done: int | None = None
        self.total: int | None = None
        self.visible = False  # DELAY has passed
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._bar: Any = None  # rich.progress.Progress, on a terminal
        self._task: Any = None

    def __enter__(self) -> Progress:
        wait = DELAY - (time.monotonic() - self.started)
        if wait <= 0:
            self._become_visible()
        else:
            self._timer = threading.Timer(wait, self._become_visible)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self.visible = False
            if self._bar is not None:
                self._bar.stop()
                self._bar, self._task = None, None

    @contextmanager
    def phase(self, name: str, total: int | None = None) -> Iterator[Progress]:
        self.update(name, done=0 if total is not None else None, total=total)
        yield self

    def update(self, name: str, done: int | None = None, total: int | None = None) -> None:
        """Where the work is: a new `name` starts a phase; `done` of `total` units so far."""
        with self._lock:
            new = name != self.phase_name
            self.phase_name, self.done, self.total = name, done, total
            if self.visible:
                self._show(new)

    def _become_visible(self) -> None:
        with self._lock:
            if self.visible:
                return
            self.visible = True
            if self.phase_name is not None:
                self._show(True)

    def _show(self, new: bool) -> None:
        """Called with the lock held, once visible."""
        if not self.tty:
            if new:
                count = "" if self.total is None or self.total <= 1 else f" ({self.total:,})"
                print(f"{self.command}: {self.phase_name}{count} ...", file=self.stream, flush=True)
            return
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(file=self.stream), transient=True)
            self._bar.start()
        if new or self._task is None:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task(self.phase_name or "", total=self.total)
        self._bar.update(self._task, completed=self.done or 0, total=self.total)


__all__ = ["DELAY", "Progress"]
