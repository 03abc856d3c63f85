"""A project: the .play files under some paths, parsed and catalogued.

This is the entry point every command uses: `load(paths)` never raises on
bad input; it returns what it could read plus diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dsl import catalog as cat
from dsl import nodes as n
from dsl.diagnostics import Diagnostic
from dsl.loader import parse_all

SUFFIX = ".play"


@dataclass
class Project:
    modules: list[n.Module] = field(default_factory=list)
    catalog: cat.Catalog = field(default_factory=cat.Catalog)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # file -> text, for carets

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity.value == "error"]


class UsageError(Exception):
    """A path that does not exist or holds no .play file (exit code 2)."""


def discover(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(q for q in p.rglob(f"*{SUFFIX}") if q.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"no such file or folder: {raw}")
    if not files:
        raise UsageError(f"no {SUFFIX} files under: {', '.join(str(p) for p in paths)}")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def load(paths: list[str | Path], jobs: int | None = None) -> Project:
    """Parse and catalogue every .play file under `paths` (raises UsageError only).

    A large folder is parsed on every core (dsl/loader.py; `jobs=1` or
    PLAYBOOK_JOBS=1 forces one process); the result is the same either way."""
    project = Project()
    files = discover(paths)
    for path, result in zip(files, parse_all(files, jobs), strict=True):
        name = str(path)
        project.modules.append(result.module)
        project.diagnostics += result.diagnostics
        try:
            # bytes.decode, not read_text: read_text turns CRLF into LF, which
            # shifts every offset the parser recorded for a CRLF file.
            project.sources[name] = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
        except (OSError, UnicodeDecodeError):
            project.sources[name] = ""
    project.catalog, dups = cat.build(project.modules)
    project.diagnostics += dups
    return project


def load_text(text: str, file: str = "<input>") -> Project:
    """A project of one in-memory file (tests, the language server, fuzzing)."""
    from dsl.parser import parse

    result = parse(text, file)
    project = Project(modules=[result.module], diagnostics=list(result.diagnostics),
                      sources={file: text.removeprefix("\ufeff")})
    project.catalog, dups = cat.build(project.modules)
    project.diagnostics += dups
    return project
