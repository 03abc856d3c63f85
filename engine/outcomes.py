"""Outcomes: what an enrollment or an opportunity came to (won, lost) and what the base
lost (churned, contracted), with the ARR, the reason and the people behind it.

Every write to `outcomes` is here. Three sources call it:

* the pipeline (an opportunity moved to Closed Won / Closed Lost):
  `record_outcome(conn, OutcomeInput(..., opportunity_id=..., source="pipeline"))`
  inside the caller's transaction;
* the CLI, `playbook outcome ACCOUNT won --amount 12000 --reason ...`, which
  also closes the account's open opportunity (`close_opportunity=True`);
* a CSV or JSON Lines file, `import_outcomes(store, [path])`: all or nothing,
  each problem naming the file, the row and the column.

Recording is idempotent: an outcome has a key (`opportunity:<id>`,
`enrollment:<id>`, or `account:<id>:<outcome>:<day>`, unless the caller gives
one), and recording the same key again updates the row instead of adding one.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import pipeline
from dsl.catalog import Catalog
from engine.actions import CLOSED, move_stage
from engine.importers import ImportFailed, RowError, is_empty, read_rows
from engine.schema import Base
from engine.store import Store

OUTCOMES = ("won", "lost", "churned", "contracted")
DEAL_OUTCOMES = ("won", "lost")  # the ones that close an opportunity
STAGE_OF = {"won": pipeline.CLOSED_WON, "lost": pipeline.CLOSED_LOST}
OUTCOME_OF_STAGE = {stage: outcome for outcome, stage in STAGE_OF.items()}
assert set(STAGE_OF.values()) == set(CLOSED)
SOURCES = ("pipeline", "crm", "csv", "cli", "simulation")

T = Base.metadata.tables
OUTCOMES_T, OPPS, ENROLLMENTS, ACCOUNTS = T["outcomes"], T["opportunities"], T["enrollments"], T["accounts"]


class OutcomeError(Exception):
    """An outcome that cannot be recorded as given (unknown account, opportunity of another account, ...)."""


@dataclass(frozen=True)
class OutcomeInput:
    account_id: str
    outcome: str  # one of OUTCOMES
    amount: float | None = None  # ARR; None: the opportunity's amount, if any
    at: dt.datetime | None = None  # when it closed; None: now
    play: str | None = None
    enrollment_id: int | None = None
    opportunity_id: str | None = None
    reason: str | None = None
    objection: str | None = None
    champion: str | None = None
    approver: str | None = None
    source: str = "cli"
    key: str | None = None


@dataclass(frozen=True)
class Recorded:
    id: int
    key: str
    created: bool  # False: an outcome with this key existed and was updated
    account_id: str
    outcome: str
    amount: float | None
    play: str | None
    enrollment_id: int | None
    opportunity_id: str | None
    days_to_close: float | None
    closed_stage: str | None  # the stage the opportunity was moved to, if this call moved it

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "created": self.created, "account_id": self.account_id,
                "outcome": self.outcome, "amount": self.amount, "play": self.play,
                "enrollment_id": self.enrollment_id, "opportunity_id": self.opportunity_id,
                "days_to_close": self.days_to_close, "closed_stage": self.closed_stage}


def enrollment_of_key(idempotency_key: str | None) -> int | None:
    """The enrollment id inside a play's idempotency key (`play:<play>:<account>:<hash>:e<id>:<step>`)."""
    if not idempotency_key or not idempotency_key.startswith("play:"):
        return None
    parts = idempotency_key.split(":")
    for part in parts[3:-1]:  # account ids may hold ':'; the enrollment part is the first e<digits> after them
        if len(part) > 1 and part[0] == "e" and part[1:].isdigit():
            return int(part[1:])
    return None


def _check(o: OutcomeInput) -> None:
    if o.outcome not in OUTCOMES:
        raise OutcomeError(f"outcome must be one of {', '.join(OUTCOMES)}, not {o.outcome!r}")
    if o.amount is not None and (not math.isfinite(o.amount) or o.amount < 0):
        raise OutcomeError(f"amount must be a number of at least 0 (ARR), not {o.amount!r}")
    if o.reason is not None and not pipeline.REASON_CODE.fullmatch(o.reason):
        raise OutcomeError(f"reason code {o.reason!r} is not a code: up to 64 letters, digits and _ . : - "
                           "(e.g. budget_approved, lost:price); say more with the objection")
    if o.source not in SOURCES:
        raise OutcomeError(f"source must be one of {', '.join(SOURCES)}, not {o.source!r}")


def _resolve(conn: Connection, o: OutcomeInput) -> tuple[OutcomeInput, sa.Row[Any] | None, dt.datetime | None]:
    """Fill play, enrollment, opportunity and amount from what is linked; the opportunity row and the signal's time."""
    if conn.execute(sa.select(ACCOUNTS.c.id).where(ACCOUNTS.c.id == o.account_id)).first() is None:
        raise OutcomeError(f"no account {o.account_id!r} in the store")
    opp = None
    if o.opportunity_id is not None:
        opp = conn.execute(sa.select(OPPS).where(OPPS.c.id == o.opportunity_id)).first()
        if opp is None:
            raise OutcomeError(f"no opportunity {o.opportunity_id!r} in the store")
        if opp.account_id != o.account_id:
            raise OutcomeError(f"opportunity {o.opportunity_id!r} belongs to account {opp.account_id!r}, "
                               f"not {o.account_id!r}")
    elif o.enrollment_id is None and o.outcome in DEAL_OUTCOMES:
        # The account's open deal (of the play, if named): the one a won/lost closes.
        q = sa.select(OPPS).where(OPPS.c.account_id == o.account_id, OPPS.c.closed_at.is_(None))
        if o.play is not None:
            q = q.where(OPPS.c.play == o.play)
        opp = conn.execute(q.order_by(OPPS.c.created_at.desc(), OPPS.c.id.desc())).first()
    if opp is None and o.enrollment_id is None and o.outcome in DEAL_OUTCOMES:
        # No deal opened (yet): the account's latest run (of the play) is what converted.
        q = sa.select(ENROLLMENTS.c.id).where(ENROLLMENTS.c.account_id == o.account_id)
        if o.play is not None:
            q = q.where(ENROLLMENTS.c.play == o.play)
        latest = conn.execute(q.order_by(ENROLLMENTS.c.started_at.desc(), ENROLLMENTS.c.id.desc())).first()
        if latest is not None:
            o = replace(o, enrollment_id=latest.id)
    if opp is not None:
        o = replace(o, opportunity_id=opp.id, play=o.play if o.play is not None else opp.play,
                    amount=o.amount if o.amount is not None else opp.amount,
                    enrollment_id=o.enrollment_id if o.enrollment_id is not None
                    else enrollment_of_key(opp.idempotency_key))
    signal: dt.datetime | None = None
    if o.enrollment_id is not None:
        enr = conn.execute(sa.select(ENROLLMENTS).where(ENROLLMENTS.c.id == o.enrollment_id)).first()
        if enr is None:
            if o.opportunity_id is None:
                raise OutcomeError(f"no enrollment {o.enrollment_id!r} in the store")
            o = replace(o, enrollment_id=None)  # an opportunity's key naming a run since deleted
        else:
            if enr.account_id != o.account_id:
                raise OutcomeError(f"enrollment {o.enrollment_id} belongs to account {enr.account_id!r}, "
                                   f"not {o.account_id!r}")
            o = replace(o, play=o.play if o.play is not None else enr.play)
            signal = enr.started_at
    if signal is None and opp is not None:
        signal = opp.created_at
    return o, opp, signal


def _key(o: OutcomeInput, at: dt.datetime) -> str:
    if o.key:
        return o.key
    if o.opportunity_id is not None:
        return f"opportunity:{o.opportunity_id}"
    if o.enrollment_id is not None:
        return f"enrollment:{o.enrollment_id}"
    return f"account:{o.account_id}:{o.outcome}:{at.date().isoformat()}"


def record_outcome(conn: Connection, outcome: OutcomeInput, *, close_opportunity: bool = False,
                   actor: str | None = None) -> Recorded:
    """Record (or update, same key) one outcome on `conn`, in the caller's transaction.

    With `close_opportunity`, a won/lost also moves its open opportunity to Closed Won /
    Closed Lost (the CLI does; the pipeline, which moved it already, does not).
    """
    _check(outcome)
    at = outcome.at or dt.datetime.now(dt.timezone.utc)
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.timezone.utc)
    o, opp, signal = _resolve(conn, replace(outcome, at=at))
    days = None if signal is None else round(max((at - signal).total_seconds(), 0.0) / 86400, 2)
    key = _key(o, at)
    closed_stage = None
    if close_opportunity and opp is not None and o.outcome in DEAL_OUTCOMES and opp.closed_at is None:
        closed_stage = STAGE_OF[o.outcome]
        move_stage(conn, opp.id, opp.stage, closed_stage, at, actor or o.source, o.reason)
    values = {"account_id": o.account_id, "play": o.play, "outcome": o.outcome, "value": o.amount,
              "enrollment_id": o.enrollment_id, "opportunity_id": o.opportunity_id, "at": at, "reason": o.reason,
              "objection": o.objection, "champion": o.champion, "approver": o.approver, "days_to_close": days,
              "source": o.source, "key": key}
    existing = conn.execute(sa.select(OUTCOMES_T.c.id).where(OUTCOMES_T.c.key == key)).first()
    if existing is None:
        row_id = conn.execute(OUTCOMES_T.insert().values(**values).returning(OUTCOMES_T.c.id)).scalar_one()
    else:
        row_id = existing.id
        conn.execute(OUTCOMES_T.update().where(OUTCOMES_T.c.id == row_id).values(**values))
    return Recorded(int(row_id), key, existing is None, o.account_id, o.outcome, o.amount, o.play,
                    o.enrollment_id, o.opportunity_id, days, closed_stage)


def estimated_value(conn: Connection, catalog: Catalog, account_id: str, today: dt.date) -> float | None:
    """What an expansion of the account is worth a year, as the scorecard estimates it
    (engine.scorecard.acv_column: the team's own formula, the next tier, or a fifth of ARR)."""
    from engine.scorecard import acv_column
    from engine.sqlcompile import compiler

    c = compiler(catalog, today, conn.dialect.name)
    value = conn.execute(sa.select(acv_column(c)).select_from(c.from_clause())
                         .where(c.accounts.c.id == account_id)).scalar()
    return None if value is None else round(float(value), 2)


def close_deals(store: Store, account_id: str, play: str | None, stage: str, at: dt.datetime, *,
                source: str, actor: str, catalog: Catalog | None = None) -> list[Recorded]:
    """A CRM (or the simulated customer) closed the account's deals of `play` (None: of any play):
    move each open opportunity to `stage` and record its outcome; with no open opportunity,
    record one for each running enrollment (the deal closed before the play opened one), worth
    the scorecard's estimate when `catalog` is given."""
    outcome = OUTCOME_OF_STAGE[stage]
    done: list[Recorded] = []
    with store.begin() as conn:
        q = sa.select(OPPS.c.id).where(OPPS.c.account_id == account_id, OPPS.c.closed_at.is_(None))
        if play is not None:
            q = q.where(OPPS.c.play == play)
        for (opp_id,) in conn.execute(q.order_by(OPPS.c.id)).all():
            done.append(record_outcome(conn, OutcomeInput(account_id, outcome, at=at, opportunity_id=opp_id,
                                                          source=source), close_opportunity=True, actor=actor))
        if done:
            return done
        q = sa.select(ENROLLMENTS.c.id).where(ENROLLMENTS.c.account_id == account_id,
                                              ENROLLMENTS.c.status == "running")
        if play is not None:
            q = q.where(ENROLLMENTS.c.play == play)
        running = conn.execute(q.order_by(ENROLLMENTS.c.id)).scalars().all()
        amount = (estimated_value(conn, catalog, account_id, at.date())
                  if running and catalog is not None and outcome == "won" else None)
        for enr_id in running:
            done.append(record_outcome(conn, OutcomeInput(account_id, outcome, amount=amount, at=at,
                                                          enrollment_id=enr_id, source=source)))
    return done


# --------------------------------------------------------------------------
# Files

COLUMNS = ("account_id", "outcome", "amount", "closed_at", "play", "opportunity_id", "enrollment_id", "reason",
           "objection", "champion", "approver", "key")
REQUIRED = ("account_id", "outcome")


@dataclass(frozen=True)
class ImportResult:
    file: str
    rows: int
    created: int
    updated: int


def _row_input(file: str, line: int, raw: Any, errors: list[RowError], unknown: set[str]) -> OutcomeInput | None:
    before = len(errors)

    def bad(column: str | None, reason: str) -> None:
        errors.append(RowError(file, line, column, reason))

    for c in raw:
        if c not in COLUMNS and c not in unknown:  # said once per file, at its first row
            unknown.add(c)
            bad(c, f"unknown column (known: {', '.join(COLUMNS)})")
    text = {c: (None if is_empty(raw.get(c)) else str(raw[c]).strip()) for c in COLUMNS}
    for c in REQUIRED:
        if text[c] is None:
            bad(c, "required, but empty")
    outcome = (text["outcome"] or "").lower()
    if text["outcome"] is not None and outcome not in OUTCOMES:
        bad("outcome", f"expected one of {', '.join(OUTCOMES)}, found {text['outcome']!r}")
    amount = None
    if text["amount"] is not None:
        try:
            amount = float(text["amount"].replace(",", "").lstrip("$€£"))
            if not math.isfinite(amount) or amount < 0:
                raise ValueError
        except ValueError:
            bad("amount", f"expected an ARR amount of at least 0, such as 12000, found {text['amount']!r}")
    at = None
    if text["closed_at"] is not None:
        try:
            at = dt.datetime.fromisoformat(text["closed_at"])
            at = at.replace(tzinfo=dt.timezone.utc) if at.tzinfo is None else at.astimezone(dt.timezone.utc)
        except ValueError:
            bad("closed_at", f"expected a date like 2026-01-31 or 2026-01-31T14:00:00Z, found {text['closed_at']!r}")
    enrollment = None
    if text["enrollment_id"] is not None:
        digits = text["enrollment_id"].removeprefix("e")
        if digits.isdigit():
            enrollment = int(digits)
        else:
            bad("enrollment_id", f"expected an enrollment id such as 42, found {text['enrollment_id']!r}")
    if len(errors) > before:
        return None
    return OutcomeInput(
        account_id=str(text["account_id"]), outcome=outcome, amount=amount, at=at, play=text["play"],
        enrollment_id=enrollment, opportunity_id=text["opportunity_id"], reason=text["reason"],
        objection=text["objection"], champion=text["champion"], approver=text["approver"], source="csv",
        key=text["key"])


def import_outcomes(store: Store, paths: Sequence[str | Path], *, max_errors: int = 1000) -> list[ImportResult]:
    """Record the outcomes of CSV / JSON Lines files in one transaction; ImportFailed on any problem
    (nothing is written). Columns: account_id and outcome required; amount (ARR), closed_at,
    play, opportunity_id, enrollment_id, reason, objection, champion, approver, key optional.
    Re-importing a file updates the same outcomes (each row's key, see `record_outcome`)."""
    errors: list[RowError] = []
    results: list[ImportResult] = []
    conn = store.engine.connect()
    trans = conn.begin()
    try:
        for path in paths:
            name = str(path)
            rows = created = updated = 0
            seen: dict[str, int] = {}
            unknown: set[str] = set()
            try:
                for line, raw in read_rows(path):
                    rows += 1
                    o = _row_input(name, line, raw, errors, unknown)
                    if o is None:
                        continue
                    try:
                        rec = record_outcome(conn, o)
                    except OutcomeError as e:
                        column = next((c for word, c in (("reason code", "reason"), ("opportunit", "opportunity_id"),
                                                         ("enrollment", "enrollment_id")) if word in str(e)),
                                      "account_id")
                        errors.append(RowError(name, line, column, str(e)))
                        continue
                    if rec.key in seen:
                        errors.append(RowError(name, line, "key", f"the same outcome as row {seen[rec.key]} "
                                                                  f"(key {rec.key!r}); give each row its own key"))
                        continue
                    seen[rec.key] = line
                    created, updated = created + rec.created, updated + (not rec.created)
                    if len(errors) >= max_errors:
                        break
            except ImportFailed as e:  # unreadable file, bad CSV: the reader's own errors
                errors.extend(e.errors)
            if rows == 0 and not any(e.file == name for e in errors):
                errors.append(RowError(name, 0, None, "no rows"))
            results.append(ImportResult(name, rows, created, updated))
        if errors:
            trans.rollback()
            raise ImportFailed(errors[:max_errors], len(errors))
        store.audit(conn, "import", "import.outcomes", ", ".join(map(str, paths)),
                    {"rows": sum(r.rows for r in results)})
        trans.commit()
    except BaseException:
        if trans.is_active:
            trans.rollback()
        raise
    finally:
        conn.close()
    return results


__all__ = ["COLUMNS", "DEAL_OUTCOMES", "ImportResult", "OUTCOMES", "OutcomeError", "OutcomeInput", "Recorded",
           "close_deals", "enrollment_of_key", "estimated_value", "import_outcomes", "record_outcome"]
