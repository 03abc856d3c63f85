"""Trigger effectiveness: per trigger and quarter, the share of eligible accounts it fired on,
judged against the seeds' bands, and its accuracy (fired, then converted).

A trigger fired on an account in a quarter when a sweep recorded a decision for the
account naming it among its firing triggers (`enrollment_decisions.reasons.triggers`,
or the decision's `trigger`). Quarters no sweep recorded (before the first one) are,
given the rules, evaluated from the field history by the backtest
(engine/backtest.py: the values known each day) and marked `history`. Eligible
accounts are the accounts in the store, or the accounts a caller counts (`eligible`).

Accuracy is the share of the accounts it fired on that later had a `won` outcome (at or
after the first time it fired in that quarter; from history: the quarter holding its first
fire of the evaluated days), counted only over fires old enough to have closed: at
least the median days from signal to close of the won outcomes (`days_to_close`; none
recorded: DEFAULT_MATURITY) before today. Younger fires are left out, so accuracy does not
read ~0 right after the first sweep; `counted` says how many were judged.

Bands (the seeds: "each trigger should fire on 5-15% of eligible accounts per quarter";
over 40% "thresholds too permissive: raise them, add a health gate"; under 3% "too
restrictive or data gaps: lower them, verify the tracking"): see `band`.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl.catalog import Catalog
from engine.reports.sqltime import percent, quarter, quarter_of, ratio
from engine.schema import Base

T = Base.metadata.tables
DECISIONS, OUTCOMES, ACCOUNTS = T["enrollment_decisions"], T["outcomes"], T["accounts"]
HISTORY_T = T["account_field_history"]

HEALTHY = (0.05, 0.15)
TOO_PERMISSIVE = 0.40
TOO_RESTRICTIVE = 0.03
DEFAULT_MATURITY = 90  # days a fire needs before it is judged, when no won outcome says how long deals take
SWEEPS, HISTORY = "sweeps", "history"
ADVICE = {
    "too restrictive or missing data": "lower the threshold about 20%, or check the fields it reads are filled",
    "low": "below the 5-15% healthy band",
    "healthy": "",
    "high": "above the 5-15% healthy band",
    "too permissive": "raise the threshold, add a health-score gate",
}


def band(rate: float | None) -> str:
    """Where a quarter's fire rate falls among the seeds' bands."""
    if rate is None:
        return ""
    if rate < TOO_RESTRICTIVE:
        return "too restrictive or missing data"
    if rate < HEALTHY[0]:
        return "low"
    if rate <= HEALTHY[1]:
        return "healthy"
    if rate <= TOO_PERMISSIVE:
        return "high"
    return "too permissive"


@dataclass(frozen=True)
class QuarterRow:
    trigger: str
    quarter: str
    fired: int  # accounts
    eligible: int
    converted: int  # of the counted
    counted: int = -1  # fired accounts old enough to judge; -1: all of them
    source: str = SWEEPS  # or HISTORY: evaluated from the field history, no sweep recorded it

    @property
    def judged(self) -> int:
        return self.fired if self.counted < 0 else self.counted

    @property
    def rate(self) -> float | None:
        return ratio(self.fired, self.eligible)

    @property
    def accuracy(self) -> float | None:
        return ratio(self.converted, self.judged)

    def to_json(self) -> dict[str, Any]:
        b = band(self.rate)
        return {"trigger": self.trigger, "quarter": self.quarter, "source": self.source,
                "from_history": self.source == HISTORY, "fired": self.fired, "eligible": self.eligible,
                "fire_rate": self.rate, "fire_rate_percent": percent(self.rate, 1), "band": b,
                "advice": ADVICE.get(b, ""), "accuracy_counted": self.judged, "converted": self.converted,
                "accuracy": self.accuracy, "accuracy_percent": percent(self.accuracy)}


@dataclass(frozen=True)
class TriggersReport:
    rows: list[QuarterRow]
    eligible: int
    maturity_days: int | None = None  # fires younger than this are not judged for accuracy
    maturity_from: str = ""
    today: dt.date | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"report": "triggers", "eligible": self.eligible,
                "bands": {"healthy": list(HEALTHY), "too_permissive_above": TOO_PERMISSIVE,
                          "too_restrictive_below": TOO_RESTRICTIVE},
                "accuracy_window_days": self.maturity_days, "accuracy_window_from": self.maturity_from,
                "today": None if self.today is None else self.today.isoformat(),
                "rows": [r.to_json() for r in self.rows], "notes": self.notes}


def maturity(conn: Connection) -> tuple[int, str]:
    """Days a fire must be old to be judged: the median days from signal to close of the won outcomes."""
    days = [float(d) for (d,) in conn.execute(sa.select(OUTCOMES.c.days_to_close).where(
        OUTCOMES.c.outcome == "won", OUTCOMES.c.days_to_close.is_not(None)))]
    if not days:
        return DEFAULT_MATURITY, "the default: no won outcome records its days from signal to close"
    m = round(statistics.median(days))
    return m, f"the median days from signal to close of {len(days):,} won outcome(s)"


def _fired(dialect: str) -> sa.TextClause:
    """(trigger, account_id, at) for every trigger a decision names: the JSON list, else the column."""
    if dialect == "postgresql":
        listed = ("SELECT t.value AS trigger, d.account_id, d.at FROM enrollment_decisions d "
                  "CROSS JOIN LATERAL jsonb_array_elements_text(d.reasons->'triggers') AS t(value) "
                  "WHERE jsonb_typeof(d.reasons->'triggers') = 'array'")
        bare = "jsonb_typeof(d.reasons->'triggers') IS DISTINCT FROM 'array'"
    else:
        listed = ("SELECT t.value AS trigger, d.account_id, d.at FROM enrollment_decisions d, "
                  "json_each(d.reasons, '$.triggers') AS t WHERE json_type(d.reasons, '$.triggers') = 'array'")
        bare = "(d.reasons IS NULL OR json_type(d.reasons, '$.triggers') IS NOT 'array')"
    return sa.text(f"{listed} UNION ALL SELECT d.trigger, d.account_id, d.at FROM enrollment_decisions d "
                   f"WHERE d.trigger IS NOT NULL AND {bare}")


def _instant(v: Any) -> dt.datetime:
    t = v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def triggers_report(conn: Connection, *, eligible: int | None = None, history_rules: Catalog | None = None,
                    today: dt.date | None = None) -> TriggersReport:
    """Per trigger and quarter, from the sweeps' decisions; with `history_rules`, the quarters before the
    first sweep too, evaluated with those rules from the field history (a backtest over every day of it)."""
    dialect = conn.dialect.name
    today = today or dt.date.today()
    base = eligible if eligible is not None else int(
        conn.execute(sa.select(sa.func.count()).select_from(ACCOUNTS)).scalar_one())
    days, days_from = maturity(conn)
    cutoff = dt.datetime.combine(today - dt.timedelta(days=days), dt.time(), dt.timezone.utc)
    fired = _fired(dialect).columns(sa.column("trigger", sa.Text), sa.column("account_id", sa.Text),
                                    sa.column("at", DECISIONS.c.at.type)).subquery("fired")
    q = quarter(fired.c.at, dialect)
    first = sa.select(fired.c.trigger, q.label("quarter"), fired.c.account_id,
                      sa.func.min(fired.c.at).label("first_at")).group_by(
        fired.c.trigger, q, fired.c.account_id).subquery("first")
    converted = sa.exists().where(OUTCOMES.c.account_id == first.c.account_id, OUTCOMES.c.outcome == "won",
                                  OUTCOMES.c.at >= first.c.first_at)
    old = first.c.first_at <= cutoff
    rows = [QuarterRow(r.trigger, r.quarter, int(r.fired), base, int(r.converted or 0), int(r.counted or 0))
            for r in conn.execute(sa.select(
                first.c.trigger, first.c.quarter, sa.func.count().label("fired"),
                sa.func.sum(sa.case((old, 1), else_=0)).label("counted"),
                sa.func.sum(sa.case((sa.and_(old, converted), 1), else_=0)).label("converted"),
            ).group_by(first.c.trigger, first.c.quarter).order_by(first.c.trigger, first.c.quarter))]
    notes: list[str] = []
    if history_rules is not None and history_rules.triggers:
        rows, more = _with_history(conn, history_rules, rows, base if eligible is not None else None, today,
                                   cutoff.date())
        notes += more
    rows.sort(key=lambda r: (r.trigger, r.quarter))
    return TriggersReport(rows, base, days, days_from, today, notes)


def _with_history(conn: Connection, catalog: Catalog, rows: list[QuarterRow], base: int | None, today: dt.date,
                  cutoff: dt.date) -> tuple[list[QuarterRow], list[str]]:
    """Add the quarters before the first recorded sweep, evaluated from the field history. Their eligible
    accounts are `base` if the caller counted them, else the accounts known by the quarter's end."""
    from engine.backtest import BacktestError, backtest

    first_sweep = conn.execute(sa.select(sa.func.min(DECISIONS.c.at))).scalar()
    known = conn.execute(sa.select(sa.func.min(HISTORY_T.c.valid_from)).where(HISTORY_T.c.field == "*")).scalar()
    if known is None:
        return rows, ["no field history is kept, so quarters before the first sweep cannot be evaluated"]
    start = _instant(known).date()
    end = today - dt.timedelta(days=1)
    if first_sweep is not None:
        # The quarter of the first sweep is the sweeps'; evaluate up to the day before it begins.
        q0 = _instant(first_sweep).date()
        end = min(end, dt.date(q0.year, 3 * ((q0.month - 1) // 3) + 1, 1) - dt.timedelta(days=1))
    if end < start:
        return rows, [f"the field history begins {start}: no day before the first sweep to evaluate from it"
                      if first_sweep is None or start <= _instant(first_sweep).date() else
                      f"the field history begins {start}, after the first sweep: every quarter is the sweeps'"]
    try:
        result = backtest(conn, catalog, sorted(catalog.triggers), start, end, today=today)
    except BacktestError as e:
        return rows, [f"quarters before the first sweep not evaluated: {e}"]
    won: dict[str, list[dt.date]] = {}
    for account, at in conn.execute(sa.select(OUTCOMES.c.account_id, OUTCOMES.c.at).where(
            OUTCOMES.c.outcome == "won")):
        won.setdefault(account, []).append(_instant(at).date())
    out = list(rows)
    labels = sorted({label for r in result.results for label in r.per_quarter})
    bases = {label: base for label in labels} if base is not None else _known_by(conn, labels)
    for r in result.results:
        judged: dict[str, list[bool]] = {}
        for account, day in r.first.items():
            if day <= cutoff:
                judged.setdefault(quarter_of(day), []).append(any(w >= day for w in won.get(account, ())))
        for label, count in sorted(r.per_quarter.items()):
            marks = judged.get(label, [])
            out.append(QuarterRow(r.trigger, label, count, bases[label], sum(marks), len(marks), HISTORY))
    note = (f"quarters from {start} to {end} evaluated from the field history (no sweep recorded them); "
            "their accuracy counts the accounts first fired in the quarter"
            + ("" if base is not None else "; their eligible accounts are those known by the quarter's end"))
    return out, [note]


def _known_by(conn: Connection, labels: list[str]) -> dict[str, int]:
    """Per quarter label ("2026-Q1"): the accounts the field history knows by the quarter's last day."""
    out: dict[str, int] = {}
    for label in labels:
        year, q = (int(x) for x in label.split("-Q"))
        after = dt.date(year + (q == 4), 1 if q == 4 else 3 * q + 1, 1)
        instant = dt.datetime.combine(after, dt.time(), dt.timezone.utc)
        out[label] = int(conn.execute(sa.select(sa.func.count(sa.distinct(HISTORY_T.c.account_id))).where(
            HISTORY_T.c.field == "*", HISTORY_T.c.valid_from < instant)).scalar_one())
    return out


__all__ = ["ADVICE", "DEFAULT_MATURITY", "HISTORY", "SWEEPS", "QuarterRow", "TriggersReport", "band", "maturity",
           "triggers_report"]
