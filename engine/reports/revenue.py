"""Revenue: expansion MRR and ARR, expansion rate, gross and net revenue retention (overall and
by segment), cohort expansion at 6 and 12 months, time to expand, expansion CAC.

From `outcomes` (won: expansion ARR; churned and contracted: ARR lost) over a period, and
the accounts' declared fields: the ARR base (`arr`), the segment (`segment`) and the
contract start (`contract_started_at`, for cohorts). The base is the accounts' ARR as
stored, taken as the period's starting ARR (no field history is read).

    expansion rate = expansion ARR / starting ARR
    GRR = (starting ARR - churned - contracted) / starting ARR
    NRR = (starting ARR + expansion - churned - contracted) / starting ARR
    expansion CAC = cost / expansions won; per $1 of expansion ARR = cost / expansion ARR

A churn with no amount counts the account's whole ARR.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.reports.sqltime import days_between, num, percent, quarter, ratio
from engine.schema import Base

OUTCOMES = Base.metadata.tables["outcomes"]
SIX_MONTHS, TWELVE_MONTHS = 183, 365  # days


class RevenueError(Exception):
    """A field the report needs is not a column of the accounts."""


@dataclass(frozen=True)
class Fields:
    arr: str = "arr"
    segment: str | None = "segment"
    cohort: str | None = "contract_started_at"


@dataclass(frozen=True)
class Retention:
    segment: str | None  # None: all accounts
    accounts: int
    starting_arr: float
    expansion_arr: float
    contraction_arr: float
    churned_arr: float
    expansions: int

    @property
    def expansion_rate(self) -> float | None:
        return ratio(self.expansion_arr, self.starting_arr)

    @property
    def grr(self) -> float | None:
        return ratio(self.starting_arr - self.churned_arr - self.contraction_arr, self.starting_arr)

    @property
    def nrr(self) -> float | None:
        return ratio(self.starting_arr + self.expansion_arr - self.churned_arr - self.contraction_arr,
                     self.starting_arr)

    def to_json(self) -> dict[str, Any]:
        return {"segment": self.segment, "accounts": self.accounts, "starting_arr": self.starting_arr,
                "expansion_arr": self.expansion_arr, "expansion_mrr": round(self.expansion_arr / 12, 2),
                "contraction_arr": self.contraction_arr, "churned_arr": self.churned_arr,
                "expansions": self.expansions, "expansion_rate": self.expansion_rate,
                "expansion_rate_percent": percent(self.expansion_rate, 1), "grr": self.grr,
                "grr_percent": percent(self.grr, 1), "nrr": self.nrr, "nrr_percent": percent(self.nrr, 1)}


@dataclass(frozen=True)
class Cohort:
    cohort: str  # quarter of the contract start
    accounts: int
    expanded_6m: float | None  # share expanded within 6 months; None: not 6 months old yet
    expanded_12m: float | None
    avg_expansion: float | None  # mean won ARR within 12 months

    def to_json(self) -> dict[str, Any]:
        return {"cohort": self.cohort, "accounts": self.accounts, "expanded_6m": self.expanded_6m,
                "expanded_6m_percent": percent(self.expanded_6m), "expanded_12m": self.expanded_12m,
                "expanded_12m_percent": percent(self.expanded_12m), "avg_expansion": self.avg_expansion}


@dataclass(frozen=True)
class TimeToExpand:
    quarter: str  # of the close
    expansions: int
    avg_days: float | None

    def to_json(self) -> dict[str, Any]:
        return {"quarter": self.quarter, "expansions": self.expansions, "avg_days": self.avg_days}


@dataclass(frozen=True)
class RevenueReport:
    overall: Retention
    by_segment: list[Retention]
    cohorts: list[Cohort]
    time_to_expand: list[TimeToExpand]
    avg_days_to_expand: float | None
    cost: float | None
    since: dt.date | None
    until: dt.date | None
    as_of: dt.date
    notes: list[str] = field(default_factory=list)

    @property
    def cac(self) -> float | None:
        return None if self.cost is None else ratio(self.cost, self.overall.expansions)

    @property
    def cac_per_arr(self) -> float | None:
        return None if self.cost is None else ratio(self.cost, self.overall.expansion_arr)

    def to_json(self) -> dict[str, Any]:
        return {"report": "revenue", "since": None if self.since is None else self.since.isoformat(),
                "until": None if self.until is None else self.until.isoformat(), "as_of": self.as_of.isoformat(),
                "overall": self.overall.to_json(), "by_segment": [s.to_json() for s in self.by_segment],
                "cohorts": [c.to_json() for c in self.cohorts],
                "time_to_expand": [t.to_json() for t in self.time_to_expand],
                "avg_days_to_expand": self.avg_days_to_expand, "cost": self.cost,
                "expansion_cac": num(self.cac), "expansion_cac_per_arr": num(self.cac_per_arr, 4),
                "notes": self.notes}


def _column(accounts: sa.Table, name: str | None, what: str) -> sa.ColumnElement[Any] | None:
    if name is None:
        return None
    if name not in accounts.c:
        raise RevenueError(f"the accounts have no field {name!r} for the {what} (declare it, or name another)")
    return accounts.c[name]


def _start(d: dt.date) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(), dt.timezone.utc)


def revenue_report(conn: Connection, accounts: sa.Table, *, fields: Fields = Fields(),
                   since: dt.date | None = None, until: dt.date | None = None, cost: float | None = None,
                   as_of: dt.date | None = None) -> RevenueReport:
    dialect = conn.dialect.name
    as_of = as_of or dt.date.today()
    arr = sa.func.coalesce(sa.cast(_column(accounts, fields.arr, "ARR base"), sa.Float), 0.0)
    segment = _column(accounts, fields.segment, "segment")
    cohort_col = _column(accounts, fields.cohort, "cohort (contract start)")
    period = []
    if since is not None:
        period.append(OUTCOMES.c.at >= _start(since))
    if until is not None:
        period.append(OUTCOMES.c.at < _start(until))
    o = OUTCOMES
    value = sa.func.coalesce(o.c.value, 0.0)
    per_account = sa.select(
        o.c.account_id,
        sa.func.sum(sa.case((o.c.outcome == "won", value), else_=0.0)).label("expansion"),
        sa.func.sum(sa.case((o.c.outcome == "contracted", value), else_=0.0)).label("contraction"),
        sa.func.sum(sa.case((o.c.outcome == "won", 1), else_=0)).label("wins"),
        sa.func.max(sa.case((o.c.outcome == "churned", 1), else_=0)).label("churned"),
        sa.func.sum(sa.case((sa.and_(o.c.outcome == "churned", o.c.value.is_not(None)), o.c.value),
                            else_=0.0)).label("churn_amount"),
        sa.func.sum(sa.case((sa.and_(o.c.outcome == "churned", o.c.value.is_(None)), 1), else_=0)).label(
            "churn_whole"),
    ).where(*period).group_by(o.c.account_id).subquery("per_account")
    churn = sa.case((per_account.c.churn_whole > 0, arr), else_=sa.func.coalesce(per_account.c.churn_amount, 0.0))
    joined = accounts.outerjoin(per_account, per_account.c.account_id == accounts.c.id)
    totals = (
        sa.func.count().label("accounts"), sa.func.sum(arr).label("start"),
        sa.func.sum(sa.func.coalesce(per_account.c.expansion, 0.0)).label("expansion"),
        sa.func.sum(sa.func.coalesce(per_account.c.contraction, 0.0)).label("contraction"),
        sa.func.sum(sa.func.coalesce(churn, 0.0)).label("churn"),
        sa.func.sum(sa.func.coalesce(per_account.c.wins, 0)).label("wins"),
    )

    def retention(r: Any, name: str | None) -> Retention:
        return Retention(name, int(r.accounts), float(r.start or 0), float(r.expansion or 0),
                         float(r.contraction or 0), float(r.churn or 0), int(r.wins or 0))

    overall = retention(conn.execute(sa.select(*totals).select_from(joined)).one(), None)
    by_segment = [] if segment is None else [
        retention(r, r.segment) for r in conn.execute(
            sa.select(segment.label("segment"), *totals).select_from(joined).group_by(segment).order_by(segment))]

    cohorts: list[Cohort] = []
    notes: list[str] = []
    if cohort_col is not None:
        cq = quarter(cohort_col, dialect)
        won = sa.select(o.c.account_id, o.c.at, o.c.value).where(o.c.outcome == "won").subquery("won")
        within = days_between(cohort_col, won.c.at, dialect)
        first = sa.select(
            accounts.c.id, cq.label("cohort"), cohort_col.label("start"),
            sa.func.max(sa.case((sa.and_(within >= 0, within <= SIX_MONTHS), 1), else_=0)).label("e6"),
            sa.func.max(sa.case((sa.and_(within >= 0, within <= TWELVE_MONTHS), 1), else_=0)).label("e12"),
            sa.func.sum(sa.case((sa.and_(within >= 0, within <= TWELVE_MONTHS), won.c.value))).label("v12"),
        ).select_from(accounts.outerjoin(won, won.c.account_id == accounts.c.id)).where(
            cohort_col.is_not(None)).group_by(accounts.c.id, cq, cohort_col).subquery("first")
        for r in conn.execute(sa.select(
                first.c.cohort, sa.func.count().label("n"), sa.func.max(first.c.start).label("last"),
                sa.func.sum(first.c.e6).label("e6"), sa.func.sum(first.c.e12).label("e12"),
                sa.func.avg(first.c.v12).label("avg")).group_by(first.c.cohort).order_by(first.c.cohort)):
            last = r.last if isinstance(r.last, dt.date) else dt.date.fromisoformat(str(r.last)[:10])
            old6 = (as_of - last).days >= SIX_MONTHS
            old12 = (as_of - last).days >= TWELVE_MONTHS
            cohorts.append(Cohort(r.cohort, int(r.n), ratio(int(r.e6 or 0), int(r.n)) if old6 else None,
                                  ratio(int(r.e12 or 0), int(r.n)) if old12 else None, num(r.avg)))

    closed_q = quarter(o.c.at, dialect)
    wins = sa.select(closed_q.label("q"), sa.func.count().label("n"),
                     sa.func.avg(o.c.days_to_close).label("days")).where(o.c.outcome == "won", *period)
    time_to_expand = [TimeToExpand(r.q, int(r.n), num(r.days)) for r in conn.execute(
        wins.group_by(closed_q).order_by(closed_q))]
    avg_days = conn.execute(sa.select(sa.func.avg(o.c.days_to_close)).where(o.c.outcome == "won", *period)).scalar()
    unvalued = int(conn.execute(sa.select(sa.func.count()).where(
        o.c.outcome == "won", o.c.value.is_(None), *period)).scalar_one())
    if unvalued:
        notes.append(f"{unvalued} won outcome(s) have no amount and add nothing to expansion ARR")
    return RevenueReport(overall, by_segment, cohorts, time_to_expand, num(avg_days), cost, since, until, as_of,
                         notes)


__all__ = ["Cohort", "Fields", "RevenueError", "RevenueReport", "Retention", "TimeToExpand", "revenue_report"]
