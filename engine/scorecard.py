"""The expansion-readiness scorecard: one row per account, best first, in one query.

Columns and where they come from (the rule names are options; the defaults
are the ones in playbooks/):

| column                  | source                                                               |
|-------------------------|----------------------------------------------------------------------|
| account_id              | accounts.id                                                          |
| segment                 | account.segment (empty when not declared)                            |
| health_score            | account.health_score (empty when not declared)                       |
| activation_status       | gate `expansion_ready`: `activated`, or `not activated: <first unmet requirement>` |
| expansion_readiness     | score `readiness`                                                    |
| active_triggers         | every trigger that fires, in declaration order                       |
| recommended_motion      | route `touch`'s target; with no such route, the score's band label   |
| estimated_expansion_acv | see `acv_column`                                                     |

Everything is one SELECT (triggers, gate, score, band, route and their
window joins share one FROM), sorted in the database by readiness
(descending, empty last) then account id, and streamed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from dsl.catalog import Catalog
from engine.enroll import fired_list, gate_failure, id_order, route_column, split_fired
from engine.evaluate import stream
from engine.sqlcompile import SQLCompiler, compiler

COLUMNS = ["account_id", "segment", "health_score", "activation_status", "expansion_readiness",
           "active_triggers", "recommended_motion", "estimated_expansion_acv"]
ACTIVATED = "activated"
# When no expansion amount is known: a fifth of today's ARR, the median
# expansion of a year's contract in SaaS benchmark surveys (documented in docs/engine.md).
ACV_SHARE_OF_ARR = 0.2
ACV_FIELD = "estimated_expansion_acv"


class ScorecardError(Exception):
    """A rule the scorecard was told to use does not exist."""


@dataclass(frozen=True)
class Options:
    score: str = "readiness"
    gate: str | None = "expansion_ready"
    route: str | None = "touch"


@dataclass(frozen=True)
class Row:
    account_id: str
    segment: str | None
    health_score: float | None
    activation_status: str
    expansion_readiness: float | None
    active_triggers: tuple[str, ...]
    recommended_motion: str | None
    estimated_expansion_acv: float | None

    def to_json(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "segment": self.segment, "health_score": self.health_score,
                "activation_status": self.activation_status, "expansion_readiness": self.expansion_readiness,
                "active_triggers": list(self.active_triggers), "recommended_motion": self.recommended_motion,
                "estimated_expansion_acv": self.estimated_expansion_acv}


def _has(catalog: Catalog, name: str) -> bool:
    return catalog.entity_field("account", name) is not None or catalog.entity_let("account", name) is not None


def _field_or_null(c: SQLCompiler, name: str, type_: Any) -> ColumnElement[Any]:
    return sa.cast(c.field(name), type_) if _has(c.catalog, name) else sa.cast(sa.null(), type_)


def acv_column(c: SQLCompiler) -> ColumnElement[Any]:
    """What an expansion is worth a year, first that applies:

    1. a declared `estimated_expansion_acv` (field or `let`) — the team's own formula;
    2. `next_plan_arr - arr`, never below 0 (the upgrade to the next tier);
    3. `arr * 20%` when 2 is empty or the fields are not declared.
    """
    if _has(c.catalog, ACV_FIELD):
        return sa.cast(c.field(ACV_FIELD), sa.Float)
    if not _has(c.catalog, "arr"):
        return sa.cast(sa.null(), sa.Float)
    arr = sa.cast(c.field("arr"), sa.Float)
    fallback = arr * ACV_SHARE_OF_ARR
    if not _has(c.catalog, "next_plan_arr"):
        return fallback
    diff = sa.cast(c.field("next_plan_arr"), sa.Float) - arr
    upgrade = sa.case((diff < 0, sa.literal(0.0)), else_=diff)
    return sa.func.coalesce(upgrade, fallback)


def validate(catalog: Catalog, options: Options) -> None:
    if options.score not in catalog.scores:
        raise ScorecardError(f"no score named '{options.score}'" + _known(catalog.scores))
    if options.gate is not None and options.gate not in catalog.gates:
        raise ScorecardError(f"no gate named '{options.gate}'" + _known(catalog.gates))
    if options.route is not None and options.route not in catalog.routes:
        raise ScorecardError(f"no route named '{options.route}'" + _known(catalog.routes))


def _known(table: dict[str, Any]) -> str:
    return f" (declared: {', '.join(sorted(table))})" if table else " (none is declared)"


def query(catalog: Catalog, today: dt.date, dialect: str, options: Options = Options(),
          limit: int | None = None) -> sa.Select:
    validate(catalog, options)
    c = compiler(catalog, today, dialect)
    acc = c.accounts
    fired, _ = fired_list(c, list(catalog.triggers))
    score = c.score(options.score)
    failure = gate_failure(c, options.gate) if options.gate is not None else sa.cast(sa.null(), sa.Text)
    motion = route_column(c, options.route) if options.route is not None else sa.cast(c.band(options.score), sa.Text)
    q = sa.select(
        acc.c.id.label("account_id"),
        _field_or_null(c, "segment", sa.Text).label("segment"),
        _field_or_null(c, "health_score", sa.Float).label("health_score"),
        failure.label("gate_failure"),
        sa.cast(score, sa.Float).label("readiness"),
        fired.label("fired"),
        motion.label("motion"),
        acv_column(c).label("acv"),
    ).select_from(c.from_clause()).order_by(
        sa.case((score.is_(None), 1), else_=0), score.desc(), id_order(acc.c.id, dialect))
    return q.limit(limit) if limit is not None else q


def rows(conn: Connection, catalog: Catalog, today: dt.date, options: Options = Options(),
         limit: int | None = None) -> Iterator[Row]:
    """The scorecard, streamed: best readiness first."""
    for r in stream(conn, query(catalog, today, conn.dialect.name, options, limit)):
        yield Row(
            account_id=r.account_id, segment=r.segment, health_score=_num(r.health_score),
            activation_status=ACTIVATED if r.gate_failure is None else f"not activated: {r.gate_failure}",
            expansion_readiness=_num(r.readiness), active_triggers=split_fired(r.fired),
            recommended_motion=r.motion, estimated_expansion_acv=_num(r.acv),
        )


def count(conn: Connection, catalog: Catalog) -> int:
    acc = compiler(catalog, dt.date.today(), conn.dialect.name).accounts
    return int(conn.execute(sa.select(sa.func.count()).select_from(acc)).scalar_one())


def _num(v: Any) -> float | None:
    """Whole numbers as int, so 85 prints as 85 in every format, not 85.0."""
    if v is None:
        return None
    f = float(v)
    return int(f) if f.is_integer() else round(f, 6)


__all__ = ["ACTIVATED", "COLUMNS", "Options", "Row", "ScorecardError", "acv_column", "count", "query", "rows"]
