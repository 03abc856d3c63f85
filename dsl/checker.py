"""The checker: names, types, templates and timing, every error of every file."""

from __future__ import annotations

from dsl.diagnostics import Diagnostic
from dsl.project import Project


def check(project: Project) -> list[Diagnostic]:
    """Return the check findings of `project` (syntax errors are already in project.diagnostics)."""
    return []
