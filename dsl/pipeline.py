"""The built-in expansion pipeline: its stages, the moves between them, and each stage's SLA.

One table (`STAGES`) says everything: the order of the stages, who works a
deal in each, which are closed, and the service level that runs while a
deal sits in a stage. The store (engine/pipeline.py), the SLA timers
(workflows/pipeline.py), `playbook pipeline` and a CRM connector's stage
mapping all read it; nothing else spells a stage name.

SLAs (from the CSQL process in the source material; docs/pipeline.md):

| while in       | the deal must reach | within                | measured from            |
|----------------|---------------------|-----------------------|--------------------------|
| Trigger Fired  | CSQL Created        | 48 hours              | the trigger firing       |
| CSQL Created   | Qualified           | 5 business days       | the CSQL's creation      |
| Qualified      | Proposal Sent       | 10 business days      | qualification            |
| Proposal Sent  | (no SLA)            |                       |                          |
| Negotiation    | a closed stage      | 15 business days      | entering Negotiation     |

Moves: any open stage to any later stage (skipping is fine: a play may send
a proposal straight after the trigger), back to an earlier open stage except
Trigger Fired (a stalled negotiation can go back to Proposal Sent), and from
any open stage to Closed Won or Closed Lost. Nothing leaves a closed stage:
a deal that comes back is a new opportunity. Trigger Fired is where a deal
starts, never where it moves to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dsl.nodes import Duration, DurationUnit
from dsl.suggest import closest

TRIGGER_FIRED = "Trigger Fired"
CSQL_CREATED = "CSQL Created"
QUALIFIED = "Qualified"
PROPOSAL_SENT = "Proposal Sent"
NEGOTIATION = "Negotiation"
CLOSED_WON = "Closed Won"
CLOSED_LOST = "Closed Lost"


@dataclass(frozen=True)
class Sla:
    """While a deal is in the stage, it must reach `reach` within `within` of entering it."""

    within: Duration
    reach: str  # a stage name, or "a closed stage"

    def describe(self) -> str:
        amount = f"{self.within.amount:g}"
        return f"{self.reach} within {amount} {self.within.unit.value}"


@dataclass(frozen=True)
class Stage:
    name: str
    order: int
    owner: str  # who works a deal in this stage (the seeds' roles; informational)
    meaning: str
    sla: Sla | None = None
    closed: bool = False


def _hours(n: int) -> Duration:
    return Duration(amount=n, unit=DurationUnit.HOURS)


def _business_days(n: int) -> Duration:
    return Duration(amount=n, unit=DurationUnit.BUSINESS_DAYS)


STAGES: tuple[Stage, ...] = (
    Stage(TRIGGER_FIRED, 0, "system", "a trigger detected an expansion signal",
          Sla(_hours(48), CSQL_CREATED)),
    Stage(CSQL_CREATED, 1, "csm", "the CSM validated the opportunity and added context",
          Sla(_business_days(5), QUALIFIED)),
    Stage(QUALIFIED, 2, "csm", "timing, budget and a champion are confirmed",
          Sla(_business_days(10), PROPOSAL_SENT)),
    Stage(PROPOSAL_SENT, 3, "csm+sales", "the expansion offer is with the customer"),
    Stage(NEGOTIATION, 4, "sales+csm", "terms under discussion",
          Sla(_business_days(15), "a closed stage")),
    Stage(CLOSED_WON, 5, "sales", "won; the reason code says why", closed=True),
    Stage(CLOSED_LOST, 5, "sales", "lost; the reason code says why", closed=True),
)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
CLOSED: tuple[str, ...] = tuple(s.name for s in STAGES if s.closed)
FIRST = TRIGGER_FIRED

# A reason code is a short token a report can group by: "budget_cut", "won:seats".
REASON_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class PipelineError(ValueError):
    """A stage, move or reason code the pipeline refuses; the message says which and why."""


def stage(name: str) -> Stage:
    """The stage called `name` (exactly, case included: CRM mappings match on it)."""
    found = BY_NAME.get(name)
    if found is None:
        near = closest(name, NAMES)
        hint = f"; did you mean '{near}'?" if near else ""
        raise PipelineError(f"unknown stage '{name}'{hint} (stages: {', '.join(NAMES)})")
    return found


def check_move(current: str | None, to: str) -> Stage:
    """The stage moved to, if a deal in `current` may move there (None: a new deal); else PipelineError.

    A `current` outside the table (a deal from before the table existed, or
    mirrored from a CRM with its own names) counts as an open stage. Staying
    at the same stage is no move (callers treat it as nothing to do).
    """
    target = stage(to)
    if current is None:
        if target.closed:
            raise PipelineError(f"a new opportunity cannot start at '{to}': it starts open")
        return target
    here = BY_NAME.get(current)
    if here is not None and here.closed:
        raise PipelineError(f"the opportunity is closed ('{current}'): it cannot move to '{to}'; "
                            "open a new opportunity instead")
    if target.name == FIRST:
        raise PipelineError(f"'{FIRST}' is where an opportunity starts; it cannot move back there")
    return target


def check_reason(reason: str | None) -> str | None:
    """A reason code as stored (None: no reason given); a malformed one is a PipelineError."""
    if reason is None:
        return None
    if not REASON_CODE.fullmatch(reason):
        raise PipelineError(f"reason code {reason!r} is not a code: up to 64 letters, digits and _ . : - "
                            "(e.g. budget_approved, lost:price)")
    return reason


__all__ = ["BY_NAME", "CLOSED", "FIRST", "NAMES", "STAGES", "PipelineError", "Sla", "Stage", "check_move",
           "check_reason", "stage"]
