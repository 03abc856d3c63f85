"""Diagnostics: one shape for syntax errors, check findings and test failures.

The JSON form follows ../DIAGNOSTICS.md (Terraform's range plus a stable
code and an optional fix). Codes are documented in docs/diagnostics.md and
never reused.
"""

from __future__ import annotations

import enum

from pydantic import BaseModel

from dsl.nodes import Position, Span


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


class Fix(BaseModel):
    replace: str


class Location(BaseModel):
    line: int
    column: int


class Range(BaseModel):
    file: str
    start: Location
    end: Location


class Diagnostic(BaseModel):
    code: str
    severity: Severity
    summary: str
    detail: str | None = None
    range: Range
    fix: Fix | None = None

    @property
    def file(self) -> str:
        return self.range.file

    @property
    def syntax(self) -> bool:
        """A file or syntax problem (PB0xx): the cause that later findings may follow from."""
        return int(self.code.removeprefix("PB")) < 100

    def sort_key(self) -> tuple:
        # Syntax errors first, wherever they are: a knock-on finding never comes before its cause.
        return (not self.syntax, self.range.file, self.range.start.line, self.range.start.column, self.code)


def make(
    code: str,
    summary: str,
    span: Span,
    *,
    severity: Severity = Severity.ERROR,
    detail: str | None = None,
    fix: str | None = None,
) -> Diagnostic:
    end = span.end if (span.end.line, span.end.column) > (span.start.line, span.start.column) else Position(
        line=span.start.line, column=span.start.column + 1, offset=span.start.offset + 1
    )
    return Diagnostic(
        code=code,
        severity=severity,
        summary=summary,
        detail=detail,
        range=Range(
            file=span.file,
            start=Location(line=span.start.line, column=span.start.column),
            end=Location(line=end.line, column=end.column),
        ),
        fix=Fix(replace=fix) if fix is not None else None,
    )


def point_span(file: str, text: str, offset: int, length: int = 1) -> Span:
    """A span for `length` characters at `offset` in `text`."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    end_offset = min(len(text), offset + max(1, length))
    if "\n" in text[offset:end_offset]:
        end_offset = text.index("\n", offset)
    end_col = column + max(1, end_offset - offset)
    return Span(
        file=file,
        start=Position(line=line, column=column, offset=offset),
        end=Position(line=line, column=end_col, offset=offset + max(1, end_offset - offset)),
    )
