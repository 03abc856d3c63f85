"""Run the `playbook` command in-process (fast) or as a subprocess (real
entry point, interpreter start-up, no shared state), and compare golden files."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cli.main import run

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden")
UPDATE = bool(os.environ.get("UPDATE_GOLDEN"))


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> Result:
    """`playbook ARGS` in this process, through the same guard as the console script."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(args))
    return Result(code, out.getvalue(), err.getvalue())


def run_subprocess(*args: str, cwd: Path | None = None, timeout: float = 120) -> Result:
    """The installed console script's code path (`python -m cli.main`), as CI runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PLAYBOOK_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        encoding="utf-8", errors="replace",
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_golden(path: Path, actual: str) -> None:
    """Compare with a committed golden file; UPDATE_GOLDEN=1 rewrites it instead."""
    if UPDATE or not path.exists():
        path.write_text(actual, encoding="utf-8", newline="\n")
        if not UPDATE:
            raise AssertionError(f"golden file {path} was missing and has been written; check it and commit it")
        return
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"output differs from {path} (UPDATE_GOLDEN=1 pytest ... to accept)"
