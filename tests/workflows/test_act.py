"""The one `act` activity, and the per-kind activities that plays started before it still call."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from connectors.base import Connectors
from connectors.memory import MemoryConnector
from test_replay import project, sample_account
from workflows.activities import PlayActivities, Sender, StaticAccounts
from workflows.client import DATA_CONVERTER
from workflows.model import LEGACY_ACTIVITIES

pytestmark = pytest.mark.anyio
HISTORIES = Path(__file__).with_name("histories")


def old_requests() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(history, activity type, input payload) of every per-kind activity in the histories
    recorded before patch ONE_ACT_ACTIVITY (`<play>.json`)."""
    for path in sorted(HISTORIES.glob("*.json")):
        if "." in path.stem:
            continue
        for event in json.loads(path.read_text())["events"]:
            scheduled = event.get("activityTaskScheduledEventAttributes")
            if scheduled and scheduled["activityType"]["name"] in LEGACY_ACTIVITIES.values():
                yield path.stem, scheduled["activityType"]["name"], scheduled["input"]["payloads"][0]


def activities() -> tuple[PlayActivities, MemoryConnector]:
    catalog, _ = project()
    connector = MemoryConnector()
    accounts = StaticAccounts({"acme": sample_account(catalog)}, users={"carol": Sender(name="Carol", email="carol@us.test")})
    return PlayActivities(Connectors.single(connector), accounts, catalog), connector


def environment(activity_type: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type=activity_type)
    env.payload_converter = DATA_CONVERTER.payload_converter
    return env


OLD = list(old_requests())


def test_the_old_histories_hold_requests_of_several_kinds():
    assert {name for _, name, _ in OLD} >= {"send_email", "create_task", "change_stage", "create_opportunity"}


@pytest.mark.parametrize(("history", "name", "payload"), OLD, ids=[f"{h}-{n}" for h, n, _ in OLD])
async def test_an_old_per_kind_request_still_acts(history, name, payload):
    acts, connector = activities()
    raw = RawValue(json_format.ParseDict(payload, Payload()))
    result = await environment(name).run(acts.legacy_act, [raw])
    assert not result.skipped and not result.duplicate
    [action] = connector.effects
    assert LEGACY_ACTIVITIES[action.kind] == name
    assert result.summary == action.summary()


async def test_an_activity_type_that_is_not_ours_fails_the_attempt_retryably():
    acts, _ = activities()
    raw = RawValue(DATA_CONVERTER.payload_converter.to_payloads([{}])[0])
    with pytest.raises(ApplicationError) as err:
        await environment("sweep_decide").run(acts.legacy_act, [raw])
    assert not err.value.non_retryable
    assert "not registered" in str(err.value)


def test_every_acting_step_kind_has_a_connector_action_and_no_other_kind_has_one():
    from connectors.base import ACTIONS
    from dsl.steps import KINDS

    assert {name for name, kind in KINDS.items() if kind.acts} == set(ACTIONS)


async def _guarded(error: Exception) -> BaseException:
    async def fail() -> None:
        raise error

    with pytest.raises(BaseException) as caught:
        await PlayActivities._guard(fail())
    return caught.value


async def test_a_provider_retry_after_becomes_the_next_attempts_delay():
    from connectors.base import TransientError

    raised = await _guarded(TransientError("429 from provider", retry_after=7.5))
    assert isinstance(raised, ApplicationError) and not raised.non_retryable
    assert raised.next_retry_delay is not None and raised.next_retry_delay.total_seconds() == 7.5


async def test_a_transient_error_without_retry_after_keeps_the_policys_backoff():
    from connectors.base import TransientError

    raised = await _guarded(TransientError("timeout"))
    assert isinstance(raised, TransientError)


async def test_a_permanent_error_is_not_retried():
    from connectors.base import PermanentError

    raised = await _guarded(PermanentError("400 bad address"))
    assert isinstance(raised, ApplicationError) and raised.non_retryable


# ---------------------------------------------------------------------------
# Heartbeats while a connector call runs (workflows/activities.py `heartbeating`)


class _Slow:
    """A connector whose call takes `seconds` (a provider that answers slowly)."""

    def __init__(self, seconds: float) -> None:
        import asyncio

        self.seconds, self.cancelled = seconds, asyncio.Event()

    async def act(self, action):
        import asyncio

        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return action.result(key=action.key, external_id="1")


def _email_request():
    import datetime as dt

    from workflows.model import StepContext, StepRequest
    from wf_plans import TEMPLATES, email

    ctx = StepContext(key="k1", play="usage_limit", plan_hash="h", account_id="acme", step="hello",
                      requested_at=dt.datetime(2026, 3, 2, 9, tzinfo=dt.timezone.utc))
    return StepRequest(ctx=ctx, action=email("hello"), templates={"hello": TEMPLATES["hello"]})


async def test_act_heartbeats_while_the_connector_call_runs(monkeypatch):
    from workflows import activities
    from workflow_support import ACCOUNTS

    monkeypatch.setattr(activities, "HEARTBEAT_EVERY", 0.05)
    acts = PlayActivities(Connectors.single(_Slow(0.5)), StaticAccounts(ACCOUNTS))
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    result = await env.run(acts.act, _email_request())
    assert result.summary == "email hello to ada@acme.test"
    assert len(beats) >= 5  # about one per 0.05 s of a 0.5 s call


async def test_a_cancelled_act_cancels_the_connector_call(monkeypatch):
    import asyncio

    from workflows import activities
    from workflow_support import ACCOUNTS

    monkeypatch.setattr(activities, "HEARTBEAT_EVERY", 0.05)
    slow = _Slow(30)
    acts = PlayActivities(Connectors.single(slow), StaticAccounts(ACCOUNTS))
    env = ActivityEnvironment()
    run = asyncio.ensure_future(env.run(acts.act, _email_request()))
    await asyncio.sleep(0.3)
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert slow.cancelled.is_set()
