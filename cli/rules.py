"""Reading the .play files, the same way for every `playbook` command.

One option spelling: the files or folders are PATHS (positional) where a
command takes no other argument, and `--rules PATH` (repeatable) on every
command; both default to playbooks/. One loader: an unknown path is bad
usage (exit 2); a command that needs the rules to work refuses files with
errors (exit 1) after printing them in the asked format, as `check` would.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import render
from cli.common import EXIT_FINDINGS, Fail

if TYPE_CHECKING:
    from dsl.diagnostics import Diagnostic
    from dsl.plan import Plan
    from dsl.project import Project

DEFAULT_PATHS: list[str | Path] = ["playbooks"]
_HELP = "Files or folders of .play files (default: playbooks/)."

PathsArg = Annotated[list[Path] | None, typer.Argument(help=_HELP, show_default=False)]
RulesOpt = Annotated[list[Path] | None, typer.Option("--rules", help=_HELP + " Repeatable.", show_default=False)]


def paths(*given: list[Path] | None) -> list[str | Path]:
    """The files and folders named by PATHS and --rules together, else playbooks/."""
    named: list[str | Path] = [p for group in given if group for p in group]
    return named or list(DEFAULT_PATHS)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a folder is loaded and checked.

    Loading 1,000 files creates millions of objects (parse trees, AST nodes)
    that all stay alive; each full collection rescans every one of them and
    frees nothing. That was a third of `playbook check`'s time on the
    benchmark (docs/BENCHMARKS.md). Reference counting still frees whatever
    is not in a cycle, and the collector runs again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(where: Sequence[str | Path]) -> Project:
    """The project at `where`; a path that is not there (or holds no .play file) is bad usage."""
    from dsl.project import UsageError
    from dsl.project import load as load_project

    try:
        with gc_paused():
            return load_project(list(where))
    except UsageError as e:
        raise Fail(str(e)) from e


_PLAYS_LISTED = 10  # a folder may define hundreds of plays: name a few, not all


def refuse_unknown_play(play: str, seen: Iterable[str]) -> None:
    """Bad usage (exit 2), with a did-you-mean, for a `--play` that nothing `seen` (stored rows,
    running plays) has and the rules in playbooks/ do not define: a misspelt name would
    otherwise match nothing, silently. Called only when the filter matched nothing."""
    from dsl.suggest import did_you_mean

    known = set(seen)
    if play in known:
        return
    try:
        known |= set(load(DEFAULT_PATHS).catalog.plays)
    except Fail:  # no playbooks/ here: what was seen is all there is to go by
        pass
    if play in known:
        return
    names = sorted(known)
    listed = ", ".join(names[:_PLAYS_LISTED]) + (f" and {len(names) - _PLAYS_LISTED} more"
                                                  if len(names) > _PLAYS_LISTED else "")
    hint = did_you_mean(play, names) or (f"Known plays: {listed}." if names else "No play has run yet.")
    raise Fail(f"no play '{play}' in the rules (playbooks/) or among the plays that ran. {hint}")


def check(project: Project, strict: bool = False) -> list[Diagnostic]:
    """Syntax errors, duplicates and checker findings, sorted file/line/col.
    With `strict`, warnings are reported *as* errors, so the text, JSON and
    GitHub outputs agree with the exit code."""
    from dsl.checker import check as check_project
    from dsl.diagnostics import Severity

    with gc_paused():
        found = list(project.diagnostics) + list(check_project(project))
    if strict:
        found = [
            d.model_copy(update={"severity": Severity.ERROR}) if d.severity == Severity.WARNING else d for d in found
        ]
    unique: dict[str, Diagnostic] = {}
    for d in found:  # a finding reported by two passes is shown once
        unique.setdefault(d.model_dump_json(), d)
    return sorted(unique.values(), key=lambda d: d.sort_key())


def load_and_check(where: Sequence[str | Path], strict: bool = False) -> tuple[Project, list[Diagnostic]]:
    """What `playbook check PATHS` computes (the benchmark times exactly this)."""
    with gc_paused():
        project = load(where)
        return project, check(project, strict)


def has_errors(diagnostics: Sequence[Diagnostic]) -> bool:
    from dsl.diagnostics import Severity

    return any(d.severity == Severity.ERROR for d in diagnostics)


def refuse_errors(project: Project, json_mode: bool, label: str | None = None) -> None:
    """End the command (exit 1) when the rules have errors, printing them like `check` does
    (the diagnostics JSON on stdout in JSON mode; text on stderr otherwise)."""
    diagnostics = check(project)
    if not has_errors(diagnostics):
        return
    counts = render.Counts.of(diagnostics, len(project.modules))
    if json_mode:
        print(render.json_document(diagnostics, counts))
    else:
        out = render.console(stderr=True)
        for t in render.check_text(diagnostics, project.sources, counts):
            out.print(t)
    where = f" at {label}" if label else ""
    print(f"playbook: the rules{where} have errors ({counts.line()}); run `playbook check`", file=sys.stderr)
    raise typer.Exit(EXIT_FINDINGS)


def checked(where: Sequence[str | Path], json_mode: bool) -> Project:
    """Load the rules and refuse them if they have errors."""
    project = load(where)
    refuse_errors(project, json_mode)
    return project


def compiled(project: Project) -> list[Plan]:
    """Every play's Plan (the project must check clean)."""
    from dsl.compiler import compile_plans

    return compile_plans(project)


__all__ = ["DEFAULT_PATHS", "PathsArg", "RulesOpt", "check", "checked", "compiled", "gc_paused", "has_errors",
           "load", "load_and_check", "paths", "refuse_errors"]
