"""Which task queue each acting step runs on: one queue per connector, rate-limited by the server.

    <task queue>            PlayWorkflow, SweepWorkflow, every activity (the worker's main queue)
    <task queue>.<connector> only `act`, for the step kinds that connector serves, at most
                            `[rates] <connector>` activities per second over ALL workers

A provider's rate limit (SMTP relay, HubSpot, Slack) holds across every
worker because Temporal enforces it: each worker polls every connector's
queue with `max_task_queue_activities_per_second` set from
`connectors.settings.rates()`, and the server dispatches no more than that
from the queue, whichever worker polls. Limits of that choice:

- the rate is per task queue, so per connector, not per kind or per
  account; two connectors on one provider account share nothing;
- the server keeps one value per queue and the last poller sets it: every
  worker must be given the same rates (the same settings file);
- it bounds starts of `act` attempts, retries included, not requests: an
  action that makes two HTTP calls counts once.

How a play knows the queue of a kind: `PlayInput.queues` (kind -> queue),
decided when the play is started from the connector settings (`step_queues`),
so it is fixed in the play's history and replays deterministically. A kind
not in it (plays started before this, or by code that passes no queues, such
as tests and the simulation) runs on the workflow's own queue. If a kind later
moves to another connector, plays already running keep the old connector's
queue (every worker polls every registered connector's queue, so it is still
served; the act itself uses the connector the worker's settings choose).
"""

from __future__ import annotations

from collections.abc import Mapping


def queue_name(task_queue: str, connector: str) -> str:
    return f"{task_queue}.{connector}"


def step_queues(task_queue: str, chosen: Mapping[str, str] | None = None) -> dict[str, str]:
    """kind -> the queue of the connector serving it (`chosen`: connectors.settings.choose())."""
    if chosen is None:
        from connectors.settings import choose

        chosen = choose()
    return {kind: queue_name(task_queue, name) for kind, name in chosen.items()}


def connector_queues(task_queue: str) -> dict[str, str]:
    """connector name -> its queue, for every registered connector (what a worker polls)."""
    from connectors.settings import REGISTRY

    return {name: queue_name(task_queue, name) for name in REGISTRY}


__all__ = ["connector_queues", "queue_name", "step_queues"]
