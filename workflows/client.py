"""Starting plays and delivering inbound events: the only ways in.

The workflow id `play:<play>:<account>` plus the FAIL conflict policy is
what keeps an account out of the same play twice at once: a second start
while a run is open raises `AlreadyEnrolled`. Reuse after a run closed is
allowed (re-entry); cooldowns (`reenter after 90 days`) are the store's
enrollment record's job, because Temporal only remembers closed runs for
the namespace's retention period.
"""

from __future__ import annotations

import re

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workflows.model import PlayEvent, PlayInput, PlayResult
from workflows.play import PlayWorkflow, step_in_words, workflow_id
from workflows.search_attributes import at_start

TASK_QUEUE = "playbook"
DATA_CONVERTER = pydantic_data_converter  # client, worker, test envs and Replayer all use it


class AlreadyEnrolled(Exception):
    """The account is in this play right now."""


class TemporalUnreachable(Exception):
    """No Temporal server answered, or it stopped answering: the environment, not the input."""


# Substrings of the SDK's connect errors (Rust debug dumps) and what they mean.
_CAUSES = (
    ("connection refused", "connection refused"),
    ("dns error", "unknown host"),
    ("timed out", "timed out"),
    ("deadline", "timed out"),
    ("certificate", "TLS certificate problem"),
    ("unauthenticated", "not authenticated: check the API key or client certificate"),
    ("permissiondenied", "permission denied"),
    ("http status code", "something answered that is not a Temporal frontend"),
)
# Where a dump's innermost human message sits: `message: "Connection reset by peer"`.
_INNER_MESSAGE = re.compile(r'(?:message|error): "([^"]+)"')


def connect_failure(exc: BaseException) -> str:
    """The cause of a failed connection in a few words, never the SDK's debug dump."""
    text = str(exc)
    squashed = text.lower().replace(" ", "")
    for needle, said in _CAUSES:
        if needle.replace(" ", "") in squashed:
            return said
    inner = _INNER_MESSAGE.findall(text)
    if inner:
        return inner[-1][:120]
    gist = re.split(r"tonic::|Status \{|[({\[\n]", text.removeprefix("Failed client connect:"), maxsplit=1)[0]
    return gist.strip(" :,")[:120] or "no answer"


def memo(inp: PlayInput) -> dict[str, str | int]:
    """Shown by the Web UI on every run (no search attribute registration needed)."""
    plan = inp.plan
    out: dict[str, str | int] = {"play": plan.play, "title": plan.title, "plan_hash": plan.hash}
    if plan.source is not None:
        out |= {"file": plan.source.file, "line": plan.source.line}
    return out


def static_details(inp: PlayInput) -> str:
    """The play's steps in words (Markdown), for the Web UI."""
    steps = "\n".join(f"- {step_in_words(step)}" for step in inp.plan.steps)
    return f"**{inp.plan.title}** (`{inp.plan.play}`, plan {inp.plan.hash[:12]}) for `{inp.account_id}`\n\n{steps}"


async def start_play(
    client: Client,
    inp: PlayInput,
    *,
    task_queue: str = TASK_QUEUE,
    first_event: PlayEvent | None = None,
    search_attributes: bool = True,
) -> WorkflowHandle[PlayWorkflow, PlayResult]:
    """Enroll one account. `first_event`: an event that raced the enrollment (signal-with-start).

    `search_attributes`: set PlaybookPlay/Account/PlanHash (and so let the run
    upsert PlaybookStep/Stage; workflows/search_attributes.py). The server must
    know them, or the start fails with INVALID_ARGUMENT; pass False only for a
    server where they cannot be registered.
    """
    if not inp.plan.hash:
        inp = inp.model_copy(update={"plan": inp.plan.with_hash()})
    try:
        return await client.start_workflow(
            PlayWorkflow.run,
            inp,
            id=workflow_id(inp.plan.play, inp.account_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo=memo(inp),
            search_attributes=at_start(inp.plan.play, inp.account_id, inp.plan.hash) if search_attributes else None,
            # Shown at the top of the run's page, above the input (the whole Plan as JSON).
            static_summary=f"{inp.plan.title} for {inp.account_id}",
            static_details=static_details(inp),
            start_signal="event" if first_event else None,
            start_signal_args=[first_event] if first_event else [],
        )
    except WorkflowAlreadyStartedError as exc:
        raise AlreadyEnrolled(f"{inp.account_id} is already in {inp.plan.play}") from exc


async def send_event(client: Client, play: str, account_id: str, event: PlayEvent) -> bool:
    """Deliver an inbound event to a running play; False if the account is not in it."""
    handle = client.get_workflow_handle(workflow_id(play, account_id))
    try:
        await handle.signal(PlayWorkflow.event, event)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
