"""A year of closed deals before the demo starts, so `playbook report ...` has something to show.

The demo simulates a few days; deals take weeks. This writes, for about a third of the
accounts, one past expansion deal that walked the built-in pipeline (dsl/pipeline.py)
stage by stage and closed won or lost, with its stage history, owner, amount and
outcome (reason code, objection, champion), plus a few churned and contracted accounts.
Every deal is closed, so no play or SLA timer ever picks one up; no enrollment or sweep
decision is written, so what the demo enrolls does not change.

Deterministic: the same seed, accounts and start give the same history.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from dsl import pipeline
from dsl.catalog import Catalog
from engine.outcomes import OutcomeInput, record_outcome
from engine.schema import Base
from engine.store import Store

T = Base.metadata.tables
ACTOR = "crm (demo history)"
DEAL_SHARE = 0.35  # accounts with a past deal
CHURN_SHARE, CONTRACTION_SHARE = 0.03, 0.04
# (stage, chance to move on from it, days spent in it: low, high)
WALK = ((pipeline.TRIGGER_FIRED, 0.85, 0.2, 2.0), (pipeline.CSQL_CREATED, 0.75, 1.0, 6.0),
        (pipeline.QUALIFIED, 0.7, 3.0, 12.0), (pipeline.PROPOSAL_SENT, 0.75, 3.0, 10.0),
        (pipeline.NEGOTIATION, 0.6, 4.0, 18.0))
WON_REASONS = ("won:seats", "won:tier", "won:usage")
LOST = (("lost:price", "the price per seat is above budget"), ("lost:timing", "not before the next budget cycle"),
        ("lost:no_budget", "no budget this year"), ("lost:competitor", "a cheaper tool covers it"))


@dataclass(frozen=True)
class History:
    deals: int
    won: int
    lost: int
    churned: int
    contracted: int


def _col(row: Any, name: str) -> Any:
    return getattr(row, name, None)


def write(store: Store, catalog: Catalog, *, seed: int, before: dt.datetime) -> History:
    """Write the history (ending before `before`) in one transaction."""
    rng = random.Random(f"demo-history:{seed}")
    table = store.table("account", catalog)
    wanted = [c for c in ("id", "arr", "ae", "csm", "admin") if c in table.c]
    plays: list[str | None] = [*sorted(catalog.plays)] or [None]
    won = lost = churned = contracted = 0
    with store.begin() as conn:
        accounts = conn.execute(sa.select(*[table.c[c] for c in wanted]).order_by(table.c.id)).all()
        opps: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        closes: list[OutcomeInput] = []
        for acc in accounts:
            arr = float(_col(acc, "arr") or 0.0)
            if rng.random() < DEAL_SHARE:
                created = before - dt.timedelta(days=rng.uniform(30, 365))
                at, moves, outcome = created, [], "lost"
                for stage, go_on, low, high in WALK:
                    moves.append((stage, at))
                    at += dt.timedelta(days=rng.uniform(low, high))
                    if rng.random() >= go_on:
                        break
                else:
                    outcome = "won"
                closed_stage = pipeline.CLOSED_WON if outcome == "won" else pipeline.CLOSED_LOST
                moves.append((closed_stage, at))
                late = moves[-1][1] - (before - dt.timedelta(days=1))
                if late > dt.timedelta(0):  # closed before the demo starts
                    moves = [(s, t - late) for s, t in moves]
                opp_id = f"hist-{acc.id}"
                opps.append({"id": opp_id, "account_id": acc.id, "play": rng.choice(plays), "title": "Expansion",
                             "stage": closed_stage, "amount": round(arr * rng.uniform(0.1, 0.35), -2) or None,
                             "owner": _col(acc, "ae") or _col(acc, "csm"), "created_at": moves[0][1],
                             "updated_at": moves[-1][1], "closed_at": moves[-1][1]})
                history += [{"opportunity_id": opp_id, "from_stage": moves[i - 1][0] if i else None, "stage": s,
                             "at": t, "actor": ACTOR} for i, (s, t) in enumerate(moves)]
                reason, objection = (rng.choice(WON_REASONS), None) if outcome == "won" else rng.choice(LOST)
                closes.append(OutcomeInput(acc.id, outcome, at=moves[-1][1], opportunity_id=opp_id, reason=reason,
                                           objection=objection, champion=_col(acc, "admin"),
                                           approver="finance" if outcome == "won" else None, source="crm"))
                won, lost = won + (outcome == "won"), lost + (outcome == "lost")
            draw = rng.random()
            if draw < CHURN_SHARE:
                closes.append(OutcomeInput(acc.id, "churned", at=before - dt.timedelta(days=rng.uniform(10, 300)),
                                           reason="churn:value", source="crm"))
                churned += 1
            elif draw < CHURN_SHARE + CONTRACTION_SHARE and arr:
                closes.append(OutcomeInput(acc.id, "contracted", amount=round(arr * rng.uniform(0.1, 0.3), -2),
                                           at=before - dt.timedelta(days=rng.uniform(10, 300)),
                                           reason="contraction:seats", source="crm"))
                contracted += 1
        if opps:
            conn.execute(T["opportunities"].insert(), opps)
            conn.execute(T["stage_history"].insert(), history)
        for o in closes:
            record_outcome(conn, o)
    return History(len(opps), won, lost, churned, contracted)


__all__ = ["History", "write"]
