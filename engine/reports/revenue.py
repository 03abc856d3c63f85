"""Revenue: expansion MRR and ARR, expansion rate, gross and net revenue retention (overall and
by segment), cohort expansion at 6 and 12 months, time to expand, expansion CAC.

Retention compares each account's ARR at the period's start with its ARR at the end, both
as known then (account_field_history, engine/history.py), over the accounts that were
customers at the start (known by then, ARR above 0, not churned before); the segment is
the one the account had at the start. An account whose ARR field never changed in the
period (the ARR is not kept up to date by the imports) ends at its start ARR moved by its
outcomes in the period: + won, - contracted, - churned (a churn with no amount: all of it).
A churn with no amount ends an account at 0 either way.

    NRR = ending ARR / starting ARR
    GRR = (starting ARR - contraction - churn) / starting ARR
    expansion = sum over accounts of max(end - start, 0) (not churned); rate = expansion / start
    expansion CAC = cost / wins; per $1 = cost / won ARR (the wins closed in the period, all accounts)

The period defaults to the twelve months to `as_of` (included). Accounts first known with
the history's first import are taken to predate it: their first known values stand in for
the start; accounts first known later, after the start, are new and outside the base.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.reports.sqltime import days_between, num, percent, quarter, ratio
from engine.history import HISTORY, KNOWN
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
    accounts: int  # customers at the start
    starting_arr: float
    ending_arr: float
    expansion_arr: float
    contraction_arr: float
    churned_arr: float
    expansions: int  # won outcomes in the period
    won_arr: float  # their amounts

    @property
    def expansion_rate(self) -> float | None:
        return ratio(self.expansion_arr, self.starting_arr)

    @property
    def grr(self) -> float | None:
        return ratio(self.starting_arr - self.churned_arr - self.contraction_arr, self.starting_arr)

    @property
    def nrr(self) -> float | None:
        return ratio(self.ending_arr, self.starting_arr)

    def to_json(self) -> dict[str, Any]:
        return {"segment": self.segment, "accounts": self.accounts, "starting_arr": num(self.starting_arr),
                "ending_arr": num(self.ending_arr), "expansion_arr": num(self.expansion_arr),
                "expansion_mrr": num(self.expansion_arr / 12), "contraction_arr": num(self.contraction_arr),
                "churned_arr": num(self.churned_arr), "expansions": self.expansions, "won_arr": num(self.won_arr),
                "expansion_rate": self.expansion_rate, "expansion_rate_percent": percent(self.expansion_rate, 1),
                "grr": self.grr, "grr_percent": percent(self.grr, 1), "nrr": self.nrr,
                "nrr_percent": percent(self.nrr, 1)}


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
    since: dt.date  # the period, since included
    until: dt.date  # excluded
    as_of: dt.date
    wins: int = 0  # won outcomes closed in the period, every account
    won_arr: float = 0.0
    ended_by_history: int = 0  # accounts of the base whose ending ARR the field history gave
    ended_by_outcomes: int = 0  # ... whose ARR never changed in the period: start moved by outcomes
    new_accounts: int = 0  # first known after the start: not in the base
    notes: list[str] = field(default_factory=list)

    @property
    def cac(self) -> float | None:
        return None if self.cost is None else ratio(self.cost, self.wins)

    @property
    def cac_per_arr(self) -> float | None:
        return None if self.cost is None else ratio(self.cost, self.won_arr)

    def to_json(self) -> dict[str, Any]:
        return {"report": "revenue", "since": self.since.isoformat(), "until": self.until.isoformat(),
                "as_of": self.as_of.isoformat(), "overall": self.overall.to_json(),
                "by_segment": [s.to_json() for s in self.by_segment], "cohorts": [c.to_json() for c in self.cohorts],
                "time_to_expand": [t.to_json() for t in self.time_to_expand],
                "avg_days_to_expand": self.avg_days_to_expand, "cost": self.cost, "wins": self.wins,
                "won_arr": num(self.won_arr), "expansion_cac": num(self.cac),
                "expansion_cac_per_arr": num(self.cac_per_arr, 4),
                "ending_arr_from": {"history": self.ended_by_history, "outcomes": self.ended_by_outcomes},
                "new_accounts": self.new_accounts, "notes": self.notes}


def _column(accounts: sa.Table, name: str | None, what: str) -> sa.ColumnElement[Any] | None:
    if name is None:
        return None
    if name not in accounts.c:
        raise RevenueError(f"the accounts have no field {name!r} for the {what} (declare it, or name another)")
    return accounts.c[name]


def _start(d: dt.date) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(), dt.timezone.utc)


def _instant(v: Any) -> dt.datetime:
    t = v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _value_at(accounts: sa.Table, name: str, current: sa.ColumnElement[Any], at: dt.datetime,
              number: bool) -> sa.ColumnElement[Any]:
    """The field's value just before instant `at`: the earliest replaced value still current then
    (before the account's history began: its first known value), else the column."""
    h = HISTORY
    held = sa.and_(h.c.account_id == accounts.c.id, h.c.field == name, h.c.valid_to >= at)
    value = (sa.select(h.c.value_number if number else h.c.value_text).where(held)
             .order_by(h.c.valid_to).limit(1).scalar_subquery())
    return sa.case((sa.exists().where(held), value), else_=current)


def _changed(accounts: sa.Table, name: str, start: dt.datetime, end: dt.datetime) -> sa.ColumnElement[Any]:
    h = HISTORY
    return sa.exists().where(h.c.account_id == accounts.c.id, h.c.field == name, h.c.valid_to >= start,
                             h.c.valid_to < end)


@dataclass
class _Sums:
    accounts: int = 0
    start: float = 0.0
    end: float = 0.0
    expansion: float = 0.0
    contraction: float = 0.0
    churn: float = 0.0
    wins: int = 0
    won: float = 0.0

    def retention(self, segment: str | None) -> Retention:
        return Retention(segment, self.accounts, self.start, self.end, self.expansion, self.contraction, self.churn,
                         self.wins, self.won)


def revenue_report(conn: Connection, accounts: sa.Table, *, fields: Fields = Fields(),
                   since: dt.date | None = None, until: dt.date | None = None, cost: float | None = None,
                   as_of: dt.date | None = None) -> RevenueReport:
    dialect = conn.dialect.name
    as_of = as_of or dt.date.today()
    until = until or as_of + dt.timedelta(days=1)
    since = since or _year_before(until - dt.timedelta(days=1)) + dt.timedelta(days=1)
    start, end = _start(since), _start(until)
    arr_col = _column(accounts, fields.arr, "ARR base")
    assert arr_col is not None and fields.arr is not None
    segment = _column(accounts, fields.segment, "segment")
    cohort_col = _column(accounts, fields.cohort, "cohort (contract start)")
    o = OUTCOMES
    period = (o.c.at >= start, o.c.at < end)
    value = sa.func.coalesce(o.c.value, 0.0)

    current_arr = sa.cast(arr_col, sa.Float)
    known = sa.select(HISTORY.c.valid_from).where(HISTORY.c.account_id == accounts.c.id,
                                                  HISTORY.c.field == KNOWN).scalar_subquery()
    columns = [accounts.c.id, known.label("known"),
               sa.cast(_value_at(accounts, fields.arr, current_arr, start, True), sa.Float).label("start"),
               sa.cast(_value_at(accounts, fields.arr, current_arr, end, True), sa.Float).label("end"),
               _changed(accounts, fields.arr, start, end).label("changed")]
    if segment is not None and fields.segment is not None:
        columns.append(_value_at(accounts, fields.segment, sa.cast(segment, sa.Text), start, False).label("segment"))
    first_known = conn.execute(sa.select(sa.func.min(HISTORY.c.valid_from)).where(HISTORY.c.field == KNOWN)).scalar()
    # Known with the history's first import (that day): the account predates the history.
    founding = None if first_known is None else _instant(first_known) + dt.timedelta(days=1)
    # A period starting before the history: an older account's first known ARR already holds the
    # outcomes closed between the start and the history's first import; take them back out.
    back = (o.c.at >= start, o.c.at < _instant(first_known)) if first_known is not None and _instant(
        first_known) > start else (sa.false(),)

    moves: dict[str, Any] = {r.account_id: r for r in conn.execute(sa.select(
        o.c.account_id,
        sa.func.sum(sa.case((sa.and_(o.c.outcome == "won", *period), value), else_=0.0)).label("won"),
        sa.func.sum(sa.case((sa.and_(o.c.outcome == "won", *period), 1), else_=0)).label("wins"),
        sa.func.sum(sa.case((sa.and_(o.c.outcome == "contracted", *period), value), else_=0.0)).label("contracted"),
        sa.func.sum(sa.case((sa.and_(o.c.outcome == "churned", o.c.value.is_not(None), *period), o.c.value),
                            else_=0.0)).label("churn_amount"),
        sa.func.max(sa.case((sa.and_(o.c.outcome == "churned", o.c.value.is_(None), *period), 1),
                            else_=0)).label("churned"),
        sa.func.max(sa.case((sa.and_(o.c.outcome == "churned", o.c.at < start), 1), else_=0)).label("gone"),
        sa.func.sum(sa.case((sa.and_(o.c.outcome == "won", *back), value),
                            (sa.and_(o.c.outcome.in_(["contracted", "churned"]), *back), -value),
                            else_=0.0)).label("before"),
    ).where(o.c.at < end).group_by(o.c.account_id))}

    overall, groups = _Sums(), dict[str | None, _Sums]()
    by_history = by_outcomes = new = 0
    for r in conn.execute(sa.select(*columns)):
        m = moves.get(r.id)
        if m is not None and m.gone:
            continue  # churned before the period
        if r.known is not None and _instant(r.known) >= start and (founding is None or _instant(r.known) >= founding):
            new += 1
            continue
        arr0 = float(r.start or 0.0)
        if m is not None and m.before and (r.known is None or founding is None or _instant(r.known) < founding):
            arr0 = max(arr0 - float(m.before), 0.0)
        if arr0 <= 0:
            continue  # no revenue at the start: not in the base
        if r.changed:
            arr1 = float(r.end or 0.0)
            by_history += 1
        else:
            arr1 = arr0 if m is None else arr0 + float(m.won) - float(m.contracted) - float(m.churn_amount)
            by_outcomes += 1
        if m is not None and m.churned:
            arr1 = 0.0
        arr1 = max(arr1, 0.0)
        seg = getattr(r, "segment", None) if segment is not None else None
        for s in (overall, groups.setdefault(seg, _Sums())) if segment is not None else (overall,):
            s.accounts += 1
            s.start += arr0
            s.end += arr1
            if arr1 == 0.0:
                s.churn += arr0
            elif arr1 > arr0:
                s.expansion += arr1 - arr0
            else:
                s.contraction += arr0 - arr1
            if m is not None:
                s.wins += int(m.wins or 0)
                s.won += float(m.won or 0.0)
    by_segment = [groups[k].retention(k) for k in sorted(groups, key=lambda k: (k is None, k or ""))]
    totals = conn.execute(sa.select(sa.func.count(), sa.func.sum(value)).where(o.c.outcome == "won", *period)).one()
    notes: list[str] = []
    if new:
        notes.append(f"{new:,} account(s) first known after {since} are new, not in the starting base")
    if founding is not None and _instant(first_known) >= start:
        notes.append(f"the field history begins {_instant(first_known).date()}, after the period's start: "
                     "the accounts known then start at their first known ARR less the outcomes closed between "
                     "the period's start and then (won; contracted and churned amounts added back), and keep "
                     "their first known segment")
    moved = any(m.wins or m.contracted or m.churn_amount or m.churned for m in moves.values())
    if by_outcomes and not by_history and not moved:
        notes.append("nothing to measure: no account's ARR changed in the period and no outcome (won, contracted, "
                     "churned) closed in it, so retention shows no movement; record outcomes (playbook import "
                     "outcomes=FILE) or import the accounts as their ARR changes")
    elif by_outcomes and not by_history:
        notes.append("no account's ARR changed in the period: ending ARR is the starting ARR moved by the "
                     "outcomes (won, contracted, churned)")

    cohorts: list[Cohort] = []
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
    return RevenueReport(overall.retention(None), by_segment, cohorts, time_to_expand, num(avg_days), cost, since,
                         until, as_of, int(totals[0] or 0), float(totals[1] or 0.0), by_history, by_outcomes, new,
                         notes)


def _year_before(d: dt.date) -> dt.date:
    try:
        return d.replace(year=d.year - 1)
    except ValueError:  # 29 February
        return d.replace(year=d.year - 1, day=28)


__all__ = ["Cohort", "Fields", "RevenueError", "RevenueReport", "Retention", "TimeToExpand", "revenue_report"]
