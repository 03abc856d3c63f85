"""Time arithmetic the reports need, spelled for each database, plus the shared rounding.

SQLite keeps instants as naive UTC text (engine.schema.UTCDateTime) and dates as
ISO text; PostgreSQL as timestamptz and date. Both answer in days and quarters here.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement


def days_between(start: ColumnElement[Any], end: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """`end - start` in days (fractional), NULL if either is NULL."""
    if dialect == "postgresql":
        return sa.func.extract("epoch", sa.cast(end, sa.DateTime(timezone=True))
                               - sa.cast(start, sa.DateTime(timezone=True))) / 86400.0
    return sa.func.julianday(end) - sa.func.julianday(start)


def quarter(col: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """'2026-Q3' for an instant or a date (UTC)."""
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", sa.cast(col, sa.DateTime(timezone=True))), 'YYYY"-Q"Q')
    month = sa.cast(sa.func.strftime("%m", col), sa.Integer)
    q = sa.case((month <= 3, "1"), (month <= 6, "2"), (month <= 9, "3"), else_="4")
    return sa.func.strftime("%Y", col) + "-Q" + q


def quarter_of(day: dt.date | dt.datetime) -> str:
    return f"{day.year}-Q{(day.month + 2) // 3}"


def ratio(part: float | int | None, whole: float | int | None) -> float | None:
    """part / whole, None when whole is empty or 0 (no rate, rather than a made-up 0%)."""
    if part is None or not whole:
        return None
    return float(part) / float(whole)


def percent(r: float | None, places: int = 0) -> str:
    """A ratio as a percent, rounded half up (62.5% -> 63%, as a reader rounds), '' when None.
    Trailing zeros go: 7.50 -> 7.5%, 60.0 -> 60%."""
    if r is None:
        return ""
    q = Decimal(repr(r)) * 100
    text = str(q.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"


def num(v: Any, places: int = 2) -> float | None:
    """A database number as a float rounded for JSON; None stays None."""
    return None if v is None else round(float(v), places)


__all__ = ["days_between", "num", "percent", "quarter", "quarter_of", "ratio"]
