"""The `playbook` command: argument parsing and presentation over the library.

This module holds the commands over .play files (check, fmt, compile, test,
summary) and the guard that turns every outcome into an exit code; the other
command groups live in their own cli/*_commands.py modules.

Exit codes (documented in README.md and `playbook --help`):

    0  clean: no errors (and, with --strict, no warnings); tests passed
    1  findings: errors in the files, failing tests, files `fmt --check`
       would change, a play `compile` could not build
    2  bad usage: unknown option, unknown path, a folder with no .play file,
       `compile` of a name that is not a play
    3  internal error: a bug in playbook itself (never a traceback; set
       PLAYBOOK_DEBUG=1 to see one)
    4  the environment: a store or server (database, Temporal) could not be
       reached, or a package playbook depends on is not installed

With `--format json` stdout holds exactly one JSON document, whatever
happens — usage and internal errors included.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

try:  # typer >= 0.23 vendors click; older versions depend on it
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc  # type: ignore[no-redef]

from cli import (backtest_commands, data_commands, doctor_commands, effects_commands, engine_commands,
                 hubspot_commands, message_commands, outcome_commands, pipeline_commands, render, report_commands, rules,
                 serve_commands, sweep_commands, sync_commands, webhook_commands, workflow_commands)
from cli.common import EXIT_FINDINGS, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, Fail, TextOrJson, TodayOpt, error_kind, failure
from cli.common import today as today_in_team_zone
from cli.rules import PathsArg, RulesOpt
from dsl.diagnostics import Diagnostic, Severity, make
from dsl.nodes import Span
from dsl.project import Project, UsageError, discover

app = typer.Typer(
    name="playbook",
    help="Check, test and compile .play files; decide and run the plays over your account data. "
    "Exit codes: 0 clean, 1 findings, 2 bad usage, 3 internal error, 4 store or server unreachable (or a dependency missing).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # our guard in main() owns unexpected errors
    rich_markup_mode=None,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"playbook {version('playbook')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            print("playbook (version unknown: not installed; pip install -e .)")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print playbook's version and exit.")] = False,
) -> None:
    """Options of `playbook` itself (before the command)."""


class CheckFormat(str, enum.Enum):
    text = "text"
    json = "json"
    github = "github"
    sarif = "sarif"


class TestFormat(str, enum.Enum):
    text = "text"
    json = "json"
    github = "github"
    junit = "junit"


StrictOpt = Annotated[bool, typer.Option("--strict", help="Treat warnings as errors (exit 1).")]


# ---------------------------------------------------------------- shared steps


def _print_diagnostics(
    fmt: str, diagnostics: Sequence[Diagnostic], sources: dict[str, str], files: int, **extra: Any
) -> None:
    counts = render.Counts.of(diagnostics, files)
    if fmt == "json":
        print(render.json_document(diagnostics, counts, **extra))
    elif fmt == "github":
        for d in diagnostics:
            print(render.github_annotation(d))
        print(counts.line())
    elif fmt == "sarif":
        print(render.sarif_document(diagnostics))
    else:
        out = render.console()
        for t in render.check_text(diagnostics, sources, counts):
            out.print(t)


# ---------------------------------------------------------------- check


@app.command()
def check(
    paths: PathsArg = None,
    rules_: RulesOpt = None,
    format: Annotated[CheckFormat, typer.Option("--format", help="Output format.")] = CheckFormat.text,
    strict: StrictOpt = False,
) -> None:
    """Check .play files: syntax, names, types, templates, timing."""
    project = rules.load(rules.paths(paths, rules_))
    diagnostics = rules.check(project, strict)
    _print_diagnostics(format.value, diagnostics, project.sources, len(project.modules))
    raise typer.Exit(EXIT_FINDINGS if rules.has_errors(diagnostics) else EXIT_OK)


# ---------------------------------------------------------------- fmt


def _read_source(path: Path) -> str | Diagnostic:
    """The file's text, or the problem that kept it from being read."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return make("PB001", f"cannot read file: {e.strerror or e}", Span(file=str(path)))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return make(
            "PB001", f"file is not UTF-8 text (byte {e.start} is 0x{raw[e.start]:02x})", Span(file=str(path))
        )


def write_atomically(path: Path, text: str) -> None:
    """Replace `path`'s content with `text` so that a reader (or a crash)
    sees the old file or the new one, never half of one: write a temporary
    file beside it, fsync, keep the mode, then rename over. A symlink is
    followed, so the link stays a link."""
    target = Path(os.path.realpath(path))
    mode = target.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:  # newline="": keep the formatter's endings
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@app.command()
def fmt(
    paths: PathsArg = None,
    rules_: RulesOpt = None,
    check_only: Annotated[
        bool, typer.Option("--check", help="Change nothing; list files that would change and exit 1 if any.")
    ] = False,
    format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
) -> None:
    """Rewrite .play files in the one canonical layout (comments kept)."""
    from dsl.formatter import format_source

    try:
        files = discover(rules.paths(paths, rules_))
    except UsageError as e:
        raise Fail(str(e)) from e
    changed: list[str] = []
    unchanged: list[str] = []
    problems: list[Diagnostic] = []
    sources: dict[str, str] = {}
    for path in files:
        name = str(path)
        text = _read_source(path)
        if isinstance(text, Diagnostic):
            problems.append(text)
            continue
        sources[name] = text.removeprefix("\ufeff")
        result = format_source(text, name)
        if result.text is None:  # syntax errors: the formatter refuses, and so do we
            problems += [d for d in result.diagnostics if d.severity == Severity.ERROR] or [
                make("PB002", "file has syntax errors; not formatted", Span(file=name))
            ]
            continue
        if result.text == text:
            unchanged.append(name)
            continue
        changed.append(name)
        if not check_only:
            write_atomically(path, result.text)

    problems.sort(key=lambda d: d.sort_key())
    verb = "would reformat" if check_only else "reformatted"
    if format == TextOrJson.json:
        counts = render.Counts.of(problems, len(files))
        print(render.json_document(problems, counts, changed=changed, unchanged=unchanged, check=check_only))
    else:
        out = render.console()
        for d in problems:
            out.print(render.format_diagnostic(d, sources.get(d.range.file)))
            out.print()
        for name in changed:
            out.print(f"{verb} {name}")
        done = "would be reformatted" if check_only else "reformatted"
        parts = [f"{plural_files(len(changed))} {done}", f"{len(unchanged)} unchanged"]
        if problems:
            parts.append(f"{plural_files(len({d.range.file for d in problems}))} not formatted (errors)")
        out.print(", ".join(parts))
    failed = bool(problems) or (check_only and bool(changed))
    raise typer.Exit(EXIT_FINDINGS if failed else EXIT_OK)


def plural_files(count: int) -> str:
    return render.plural(count, "file")


# ---------------------------------------------------------------- compile


@app.command("compile")
def compile_(
    name: Annotated[str | None, typer.Argument(help="The play to compile.", show_default=False)] = None,
    paths: PathsArg = None,
    rules_: RulesOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Print every play's Plan.")] = False,
    format: Annotated[TextOrJson, typer.Option("--format", help="Only json: a Plan is JSON.")] = TextOrJson.json,
) -> None:
    """Print a play's compiled Plan as JSON (`--all`: every play's).

    Exit 1 when the files have errors (the diagnostics JSON is printed
    instead), 2 when NAME is no play (with a did-you-mean)."""
    from dsl.compiler import compile_plans
    from dsl.plan import PlanBundle

    if all_ and name is not None:
        # `compile --all playbooks/`: the positional lands in NAME; it is a path.
        paths = [Path(name), *(paths or [])]
        name = None
    if name is None and not all_:
        raise Fail("give the name of a play, or --all")
    project = rules.load(rules.paths(paths, rules_))
    diagnostics = rules.check(project)
    if rules.has_errors(diagnostics):
        counts = render.Counts.of(diagnostics, len(project.modules))
        print(render.json_document(diagnostics, counts))
        print(f"playbook compile: {counts.line()}; run `playbook check` to see them", file=sys.stderr)
        raise typer.Exit(EXIT_FINDINGS)
    plans = compile_plans(project)
    if all_:
        print(PlanBundle(plans=plans).model_dump_json(indent=2))
        raise typer.Exit(EXIT_OK)
    by_name = {p.play: p for p in plans}
    if name not in by_name:
        close = difflib.get_close_matches(name or "", list(by_name), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else (
            f"; plays: {', '.join(sorted(by_name))}" if by_name else "; the files declare no play"
        )
        raise Fail(f"no play named '{name}'{hint}")
    print(by_name[name].to_json())
    raise typer.Exit(EXIT_OK)


# ---------------------------------------------------------------- test


def _run_tests(project: Project, today: dt.date, only: str | None) -> tuple[Any, float]:
    from dsl.testing import run_tests

    started = time.perf_counter()
    report = run_tests(project.catalog, today=today, only=only)
    return report, time.perf_counter() - started


def _test_failure_text(result: Any) -> str | None:
    from dsl.testing import render_result

    return None if result.status == "passed" else "\n".join(render_result(result)[1:])


def _check_error_cases(diagnostics: Sequence[Diagnostic]) -> list[tuple[str, str, float, str | None]]:
    """Each check error as a failed JUnit case, so CI shows why no test ran."""
    cases: list[tuple[str, str, float, str | None]] = []
    for d in diagnostics:
        if d.severity != Severity.ERROR:
            continue
        where = f"{d.range.file}:{d.range.start.line}:{d.range.start.column}"
        text = "\n".join(x for x in (f"{where}: {d.code} {d.summary}", d.detail) if x)
        cases.append((d.range.file, f"check {d.code} at line {d.range.start.line}", 0.0, text))
    return cases


def _test_summary(report: Any) -> dict[str, int]:
    return {"tests": len(report.results), "passed": report.passed, "failed": report.failed, "errored": report.errors}


@app.command()
def test(
    paths: PathsArg = None,
    rules_: RulesOpt = None,
    format: Annotated[TestFormat, typer.Option("--format", help="Output format.")] = TestFormat.text,
    today: TodayOpt = None,
    only: Annotated[str | None, typer.Option("--only", help="Run the tests whose name contains this text.")] = None,
    strict: StrictOpt = False,
) -> None:
    """Run the `test` blocks: PASS/FAIL per test, why a failure failed, and
    which triggers, plays and gates no test exercised."""
    from dsl.testing import render_text

    day = today_in_team_zone(today)
    project = rules.load(rules.paths(paths, rules_))
    diagnostics = rules.check(project, strict)
    files = len(project.modules)
    if rules.has_errors(diagnostics):
        # Tests of a project that does not check would report nonsense; say why none ran,
        # in the format asked for (a CI job reads the report exactly when a file breaks).
        if format == TestFormat.junit:
            print(render.junit_xml("playbook check", _check_error_cases(diagnostics), 0.0))
        else:
            _print_diagnostics(format.value, diagnostics, project.sources, files, tests=[], coverage=[])
        if format in (TestFormat.text, TestFormat.junit):
            print("tests not run: fix the errors above first", file=sys.stderr)
        raise typer.Exit(EXIT_FINDINGS)
    report, seconds = _run_tests(project, day, only)
    if only is not None and not report.results:
        raise Fail(f"no test name contains {only!r}")
    never = report.never_exercised
    counts = render.Counts.of(diagnostics, files)
    if format == TestFormat.json:
        summary = {**counts.as_json(), **_test_summary(report)}
        doc = {
            "diagnostics": [render.diagnostic_json(d) for d in diagnostics],
            "summary": summary,
            "tests": [r.model_dump(mode="json") for r in report.results],
            "coverage": [c.model_dump(mode="json") for c in report.coverage],
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    elif format == TestFormat.junit:
        cases = [(r.file, r.name, 0.0, _test_failure_text(r)) for r in report.results]
        print(render.junit_xml("playbook test", cases, seconds))
    elif format == TestFormat.github:
        for d in diagnostics:
            print(render.github_annotation(d))
        for r in report.results:
            if r.status != "passed":
                print(render.github_test_failure(r.file, r.line, r.name, _test_failure_text(r) or ""))
        for c in never:
            print(render.github_notice(c.file, c.line, "not covered", f"no test exercises {c.kind} {c.name}"))
        print(render.test_summary_line(report.results))
    else:
        out = render.console()
        for d in diagnostics:  # warnings only: errors stopped us above
            out.print(render.format_diagnostic(d, project.sources.get(d.range.file)))
            out.print()
        for t in render.test_text(render_text(report)):
            out.print(t)
        if never:
            out.print(render.coverage_note([(c.kind, c.name, c.file, c.line) for c in never]))
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FINDINGS)


# ---------------------------------------------------------------- summary


@app.command()
def summary(
    paths: PathsArg = None,
    rules_: RulesOpt = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
    today: TodayOpt = None,
) -> None:
    """Check and test the playbooks, then show what they define: data,
    triggers and the plays they start, scores and bands, gates, routes, plays
    with their step timelines and plan hashes, and the test results."""
    from cli.summary import build_summary, render_summary

    day = today_in_team_zone(today)
    project = rules.load(rules.paths(paths, rules_))
    diagnostics = rules.check(project)
    report = None
    plans: list[Any] = []
    if not rules.has_errors(diagnostics):
        from dsl.compiler import compile_plans

        report, _ = _run_tests(project, day, None)
        plans = compile_plans(project)
    data = build_summary(project, diagnostics, report, plans, [str(p) for p in rules.paths(paths, rules_)])
    if format == TextOrJson.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        render_summary(render.console(), data, diagnostics, project.sources)
    failed = rules.has_errors(diagnostics) or report is None or not report.ok
    raise typer.Exit(EXIT_FINDINGS if failed else EXIT_OK)


# ---------------------------------------------------------------- main / guard


def _sniff_format(argv: Sequence[str]) -> str | None:
    """The --format asked for, read before click parses (a usage error must
    still come out as JSON when JSON was asked for)."""
    for i, arg in enumerate(argv):
        if arg == "--format" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--format="):
            return arg.split("=", 1)[1]
    if argv and argv[0] == "compile":
        return "json"  # compile's stdout is always JSON
    return None


def report_error(kind: str, message: str, exit_code: int, fmt: str | None, command: str = "playbook") -> None:
    """The error on stderr, and in the machine format asked for on stdout (a CI step that
    stores a JSON or JUnit report, or reads GitHub annotations, gets one even now)."""
    if fmt == "json":
        print(render.usage_error_json(message, exit_code, kind))
    elif fmt == "junit":
        print(render.junit_xml(command, [(command, f"{command} ({kind} error)", 0.0, message)], 0.0))
    elif fmt == "github":
        print(render.github_error(command, message))
    prefix = "internal error" if kind == "internal" else "error"
    print(f"{command}: {prefix}: {message}", file=sys.stderr)


def _harden_streams() -> None:
    """Never crash on output: an unencodable character (a lone surrogate, a
    non-UTF-8 locale) is escaped instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # pragma: no cover - closed or exotic stream
                pass


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` and return the exit code (never raises,
    except SystemExit-free KeyboardInterrupt handling as 130)."""
    args = list(sys.argv[1:] if argv is None else argv)
    fmt = _sniff_format(args)
    json_mode = fmt == "json"
    command = "playbook" + (f" {args[0]}" if args and not args[0].startswith("-") else "")
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=args, prog_name="playbook", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except Fail as e:
        report_error(error_kind(e.exit_code), e.message, e.exit_code, fmt, command)
        return e.exit_code
    except click_exc.NoArgsIsHelpError as e:
        print(e.ctx.get_help() if e.ctx else e.format_message())
        return EXIT_USAGE
    except click_exc.UsageError as e:
        where = e.ctx.command_path if e.ctx else command
        message = e.format_message()
        if not json_mode:
            message += f"\n  (see `{where} --help`)"
        report_error("usage", message, EXIT_USAGE, fmt, where)
        return EXIT_USAGE
    except click_exc.ClickException as e:  # pragma: no cover - e.g. FileError
        report_error("usage", e.format_message(), EXIT_USAGE, fmt, command)
        return EXIT_USAGE
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `playbook check | head`: the reader left; say nothing more.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stop the interpreter's flush from failing
        except OSError:  # pragma: no cover
            pass
        return EXIT_FINDINGS
    except Exception as e:  # the guard: a bug in playbook, reported in one line
        known = failure(e)  # a store, server or setting that cannot be used is no bug
        if known is not None:
            report_error(error_kind(known.exit_code), known.message, known.exit_code, fmt, command)
            return known.exit_code
        if os.environ.get("PLAYBOOK_DEBUG"):
            raise
        report_error(error_kind(EXIT_INTERNAL), bug_message(e), EXIT_INTERNAL, fmt, command)
        return EXIT_INTERNAL


def bug_message(e: BaseException) -> str:
    """How an unexpected exception is reported: one line, and how to see more."""
    message = f"{type(e).__name__}: {e}".splitlines()[0][:500]
    return message + " (a bug in playbook: please report it; PLAYBOOK_DEBUG=1 shows the traceback)"


def main() -> NoReturn:
    """Console-script entry point (`playbook = "cli.main:main"`)."""
    from cli import workflow_commands

    _harden_streams()
    workflow_commands.HARD_EXIT = True  # a process of its own: leave with os._exit after Temporal (sdk-python #300)
    sys.exit(run())


# Command groups, each in its own module: Temporal (dev, worker, status), the
# engine (scorecard, why, plan), sweeps (sweep, simulate, demo), data
# (demo-data, import), what plays did (outbox, tasks), outcomes, the pipeline (stage, pipeline), inbound
# events (serve, imap-poll), the HubSpot pipeline's mapping (hubspot-pipeline), disabled webhook endpoints
# (webhooks), source syncs (sync), the setup checks (doctor).
for _group in (workflow_commands, engine_commands, sweep_commands, data_commands, effects_commands,
               outcome_commands, pipeline_commands, report_commands, message_commands, serve_commands,
               hubspot_commands, webhook_commands, sync_commands, doctor_commands, backtest_commands):
    _group.register(app)


if __name__ == "__main__":
    main()
