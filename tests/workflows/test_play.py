"""PlayWorkflow on the time-skipping server: every step kind, every exit, waits, branches."""

from __future__ import annotations

import datetime as dt

import pytest

from connectors.base import EmailMessage, FieldChange, NewOpportunity, NewTask, Notification, StageChange, TrialGrant, WebhookCall
from dsl import nodes as n
from workflows.client import AlreadyEnrolled, send_event, start_play
from workflows.model import EventKind, Outcome, PlayEvent, PlayInput, PlayResult
from wf_plans import closed_exit, days, email, plan, ref, step, sym
from workflow_support import harness
from workflows.play import PlayWorkflow

pytestmark = pytest.mark.anyio
TIMEOUT = 30  # seconds of real time per workflow; days pass instantly


async def wait_for(h, handle, seconds: float = TIMEOUT) -> PlayResult:
    import asyncio

    return await asyncio.wait_for(handle.result(), seconds)


async def start(h, p, account: str = "acme", **kw):
    now = await h.env.get_current_time()
    inp = PlayInput(plan=p, account_id=account, enrolled_at=kw.pop("enrolled_at", now), **kw)
    return await start_play(h.client, inp, task_queue=h.task_queue)


def outcomes(result: PlayResult) -> list[tuple[str, Outcome]]:
    return [(d.step, d.outcome) for d in result.decisions]


def emails(h) -> list[EmailMessage]:
    return h.connector.of_kind(EmailMessage)  # type: ignore[return-value]


async def test_every_action_kind_runs_once_in_order():
    p = plan([
        step("hello", 0, email("hello")),
        step("call", 1, n.TaskStep(assignee=ref("account.csm"), title="Call {{ name }}", due=days(2, n.DurationUnit.BUSINESS_DAYS))),
        step("opp", 2, n.OpportunityStep(title="Upgrade", amount=n.Binary(op=n.BinOp.MUL, left=ref("account.arr"), right=n.Number(value=0.2)), owner=ref("account.csm"))),
        step("proposal", 3, n.StageStep(stage="Proposal Sent")),
        step("ping", 3, n.NotifyStep(channel="#cs", message="{{ name }} is in play")),
        step("hook", 4, n.WebhookStep(url="https://hooks.test/x", event="go")),
        step("flag", 5, n.SetStep(field=ref("account.flag"), value=n.Bool(value=True))),
        step("trial", 6, n.TrialStep(feature="sso", duration=days(14))),
    ])
    async with harness() as h:
        handle = await start(h, p)
        result = await wait_for(h, handle)
    assert result.outcome == "completed"
    assert [type(e) for e in h.connector.effects] == [EmailMessage, NewTask, NewOpportunity, StageChange, Notification, WebhookCall, FieldChange, TrialGrant]
    mail, task, opp = h.connector.effects[:3]
    assert mail.to == "ada@acme.test" and mail.subject == "Hello Acme" and mail.body == "Hi Acme, you use 85%."
    assert task.assignee == "carol" and task.title == "Call Acme"
    assert task.due_at - task.requested_at >= dt.timedelta(days=2)  # business days: 2 to 4 calendar days
    assert opp.amount == pytest.approx(2400.0) and opp.owner == "carol"
    assert h.connector.effects[-1].ends_at - h.connector.effects[-1].requested_at == dt.timedelta(days=14)
    assert h.connector.effects[-2].value is True
    # Every key is distinct, carries play, account, plan hash and step label, and acted once.
    keys = [e.key for e in h.connector.effects]
    assert len(set(keys)) == len(keys)
    assert keys[0].startswith(f"play:usage_limit:acme:{p.hash}:") and keys[0].endswith(":hello")
    assert all(count == 1 for count in h.connector.attempts.values())
    # Steps ran at their day, not earlier.
    start_at = h.connector.effects[0].requested_at
    assert [round((e.requested_at - start_at) / dt.timedelta(days=1)) for e in h.connector.effects] == [0, 1, 2, 3, 3, 4, 5, 6]


async def test_reply_before_day_3_skips_the_unless_replied_email():
    p = plan([
        step("hello", 0, email("hello")),
        step("followup", 3, email("followup"), unless=sym("replied")),
        step("call", 4, n.TaskStep(assignee=ref("account.csm"), title="Call")),
    ])
    async with harness() as h:
        handle = await start(h, p)
        await h.env.sleep(dt.timedelta(days=1))
        await handle.signal(PlayWorkflow.event, PlayEvent(kind=EventKind.REPLIED))
        result = await wait_for(h, handle)
    assert [m.template for m in emails(h)] == ["hello"]
    assert ("followup", Outcome.SKIPPED) in outcomes(result)
    assert "unless replied held" in next(d.reason for d in result.decisions if d.step == "followup")
    assert len(h.connector.of_kind(NewTask)) == 1


async def test_unsubscribe_exits_before_the_next_step():
    p = plan([step("hello", 0, email()), step("followup", 3, email("followup"))], exit=closed_exit())
    async with harness() as h:
        handle = await start(h, p)
        await h.env.sleep(dt.timedelta(days=1))
        assert await send_event(h.client, p.play, "acme", PlayEvent(kind=EventKind.UNSUBSCRIBED))
        result = await wait_for(h, handle)
    assert result.outcome == "exited" and "unsubscribed" in result.reason
    assert [m.template for m in emails(h)] == ["hello"]
    assert outcomes(result)[-1] == ("followup", Outcome.EXITED)


async def test_stage_change_to_closed_won_exits():
    p = plan([step("hello", 0, email()), step("followup", 3, email("followup"))], exit=closed_exit())
    async with harness() as h:
        handle = await start(h, p)
        await h.env.sleep(dt.timedelta(days=1))
        await handle.signal(PlayWorkflow.event, PlayEvent(kind=EventKind.STAGE_CHANGED, stage="Negotiation"))
        await h.env.sleep(dt.timedelta(hours=1))
        status = await handle.query(PlayWorkflow.status)
        assert status.events.stage == "Negotiation" and status.state == "sleeping"
        await handle.signal(PlayWorkflow.event, PlayEvent(kind=EventKind.STAGE_CHANGED, stage="Closed Won"))
        result = await wait_for(h, handle)
    assert result.outcome == "exited" and "Closed Won" in result.reason
    assert len(emails(h)) == 1


async def test_closed_lost_signal_and_bounced_flags():
    p = plan([step("hello", 2, email())], exit=n.Binary(op=n.BinOp.OR, left=sym("bounced"), right=sym("closed_lost")))
    async with harness() as h:
        handle = await start(h, p)
        await handle.signal(PlayWorkflow.event, PlayEvent(kind=EventKind.CLOSED_LOST))
        result = await wait_for(h, handle)
    assert result.outcome == "exited" and emails(h) == []


async def test_event_before_start_via_signal_with_start_exits_at_once():
    p = plan([step("hello", 0, email())], exit=closed_exit())
    async with harness() as h:
        now = await h.env.get_current_time()
        handle = await start_play(
            h.client, PlayInput(plan=p, account_id="acme", enrolled_at=now), task_queue=h.task_queue,
            first_event=PlayEvent(kind=EventKind.REPLIED),
        )
        result = await wait_for(h, handle)
    assert result.outcome == "exited" and emails(h) == []


async def test_wait_ends_on_event():
    p = plan([
        step("wait", 1, n.WaitStep(timeout=days(5), events=["replied", "stage_changed"])),
        step("after", 2, n.BranchStep(condition=sym("replied"), then=[n.StageStep(stage="Proposal Sent")], otherwise=[email("followup")])),
    ])
    async with harness() as h:
        handle = await start(h, p)
        await h.env.sleep(dt.timedelta(days=1, hours=6))
        assert (await handle.query(PlayWorkflow.status)).state == "waiting"
        await handle.signal(PlayWorkflow.event, PlayEvent(kind=EventKind.REPLIED))
        result = await wait_for(h, handle)
    assert ("wait", Outcome.EVENT) in outcomes(result)
    assert ("after", Outcome.THEN) in outcomes(result)
    assert [type(e) for e in h.connector.effects] == [StageChange]
    # The branch ran at its own day (day 2), not right after the reply on day 1.
    ran_after_reply = h.connector.effects[0].requested_at - result.decisions[0].at
    assert abs(ran_after_reply - dt.timedelta(hours=18)) < dt.timedelta(seconds=1)


async def test_wait_times_out_and_later_steps_run_late():
    p = plan([
        step("wait", 1, n.WaitStep(timeout=days(5), events=["replied"])),
        step("after", 2, n.BranchStep(condition=sym("replied"), then=[n.StageStep(stage="Proposal Sent")], otherwise=[email("followup")])),
    ])
    async with harness() as h:
        handle = await start(h, p)
        result = await wait_for(h, handle)
    assert outcomes(result) == [("wait", Outcome.TIMEOUT), ("after", Outcome.LATE), ("after", Outcome.OTHERWISE), ("after/else/0", Outcome.RAN)]
    assert [m.template for m in emails(h)] == ["followup"]


async def test_branch_on_account_data_goes_through_an_activity():
    branch = n.BranchStep(
        condition=n.Binary(op=n.BinOp.GT, left=ref("account.arr"), right=n.Number(value=5000)),
        then=[n.NotifyStep(channel="#big", message="big")],
        otherwise=[n.NotifyStep(channel="#small", message="small")],
    )
    p = plan([step("route", 0, branch)])
    async with harness() as h:
        big = await wait_for(h, await start(h, p, "acme"))
        small = await wait_for(h, await start(h, p, "tiny"))
    assert [c.channel for c in h.connector.of_kind(Notification)] == ["#big", "#small"]
    assert big.decisions[0].reason == "account.arr > 5000 is true"
    assert small.decisions[0].reason == "account.arr > 5000 is false"
    keys = [c.key for c in h.connector.of_kind(Notification)]
    assert keys[0].endswith(":route/then/0") and keys[1].endswith(":route/else/0")


async def test_decision_reason_prints_the_condition_as_written():
    # `(arr + 2) * 3 > 5000 and 30 days ago < today`: parentheses and `N days ago` survive.
    product = n.Binary(op=n.BinOp.MUL, left=n.Binary(op=n.BinOp.ADD, left=ref("account.arr"), right=n.Number(value=2)), right=n.Number(value=3))
    recent = n.Binary(op=n.BinOp.LT, left=n.Ago(duration=days(30)), right=n.Today())
    cond = n.Binary(op=n.BinOp.AND, left=n.Binary(op=n.BinOp.GT, left=product, right=n.Number(value=5000)), right=recent)
    p = plan([step("route", 0, n.BranchStep(condition=cond, then=[n.NotifyStep(channel="#big", message="big")], otherwise=[]))])
    async with harness() as h:
        result = await wait_for(h, await start(h, p, "acme"))
    assert result.decisions[0].reason == "(account.arr + 2) * 3 > 5000 and 30 days ago < today is true"


async def test_anchor_relative_days_and_missed_steps():
    p = plan(
        [step("early", -90, email("hello")), step("prep", -10, n.TaskStep(assignee=ref("account.csm"), title="Prep renewal")),
         step("after", 1, email("followup"))],
        anchor=ref("account.renewal_date"),
    )
    async with harness() as h:
        now = await h.env.get_current_time()
        renewal = (now + dt.timedelta(days=30)).date()
        result = await wait_for(h, await start(h, p, anchor=renewal))
    assert outcomes(result)[0] == ("early", Outcome.MISSED)
    task = h.connector.of_kind(NewTask)[0]
    mail = emails(h)[0]
    assert task.requested_at.date() == renewal - dt.timedelta(days=10) and task.requested_at.hour == 9
    assert mail.requested_at.date() == renewal + dt.timedelta(days=1)


async def test_missing_template_value_fails_loudly_and_sends_nothing():
    p = plan([step("hello", 0, email("broken"))])
    async with harness() as h:
        handle = await start(h, p, "nameless")
        with pytest.raises(Exception) as info:
            await wait_for(h, handle)
    assert "first_name" in str(info.value.cause.message if hasattr(info.value, "cause") and info.value.cause else info.value)
    assert emails(h) == []


async def test_one_account_is_never_twice_in_the_same_play():
    p = plan([step("hello", 3, email())])
    async with harness() as h:
        await start(h, p)
        with pytest.raises(AlreadyEnrolled):
            await start(h, p)
        await start(h, p, "tiny")  # another account is fine


async def test_status_query_shows_next_step_and_decisions():
    p = plan([step("hello", 0, email()), step("followup", 3, email("followup"), unless=sym("replied"))])
    async with harness() as h:
        handle = await start(h, p)
        await h.env.sleep(dt.timedelta(hours=1))
        status = await handle.query(PlayWorkflow.status)
        enrolled = emails(h)[0].requested_at
        assert status.state == "sleeping" and status.next_step == "followup"
        assert abs(status.next_at - (enrolled + dt.timedelta(days=3))) < dt.timedelta(seconds=1)
        assert [(d.step, d.outcome) for d in status.decisions] == [("hello", Outcome.RAN)]
        assert status.plan_hash == p.hash


async def test_continue_as_new_carries_state_and_never_repeats_a_step():
    p = plan([step(f"s{i}", i, email("hello")) for i in range(5)] + [step("last", 6, email("followup"), unless=sym("replied"))])
    async with harness() as h:
        handle = await start(h, p, steps_per_run=2)
        await h.env.sleep(dt.timedelta(days=5, hours=1))
        await handle.signal(PlayWorkflow.event, PlayEvent(kind=EventKind.REPLIED))
        result = await wait_for(h, handle)
        status = await handle.query(PlayWorkflow.status)
    assert [m.step for m in emails(h)] == ["s0", "s1", "s2", "s3", "s4"]
    assert ("last", Outcome.SKIPPED) in outcomes(result)  # the reply reached the carried state
    assert status.runs == 3


async def test_unsubscribed_recipient_is_skipped_not_failed():
    from workflow_support import ACCOUNTS
    from workflows.activities import StaticAccounts

    p = plan([step("hello", 0, email()), step("call", 1, n.TaskStep(assignee=ref("account.csm"), title="Call"))])
    async with harness(accounts=StaticAccounts(ACCOUNTS, unsubscribed=frozenset({"ada@acme.test"}))) as h:
        result = await wait_for(h, await start(h, p))
    assert result.outcome == "completed" and emails(h) == []
    assert outcomes(result)[0] == ("hello", Outcome.SKIPPED) and "unsubscribed" in result.decisions[0].reason


async def test_a_sleeping_play_shows_its_next_step_and_time_without_a_query_of_ours():
    """What the Web UI shows: PlaybookNextStepAt (filterable) and the current details in words."""
    from temporalio.api.sdk.v1 import WorkflowMetadata

    from workflows.search_attributes import NEXT_STEP_AT, STEP

    p = plan([step("hello", 0, email()), step("followup", 3, email("followup"))])
    async with harness() as h:
        handle = await start(h, p)
        await h.env.sleep(dt.timedelta(hours=1))
        enrolled = emails(h)[0].requested_at
        attributes = (await handle.describe()).typed_search_attributes
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    due = enrolled + dt.timedelta(days=3)
    assert attributes.get(STEP) == "followup"
    assert abs(attributes.get(NEXT_STEP_AT) - due) < dt.timedelta(seconds=1)
    assert metadata.current_details.startswith("next: day 3 email account.admin · followup (followup), ")
    assert metadata.current_details.endswith(f"({due:%a %d %b %H:%M} UTC)")


async def test_a_play_shows_its_steps_in_words_above_its_input():
    p = plan([step("hello", 0, email()), step("followup", 3, email("followup"))])
    async with harness() as h:
        handle = await start(h, p)
        described = await handle.describe()
        summary, details = await described.static_summary(), await described.static_details()
    assert summary == "Usage limit for acme"
    assert details is not None and details.splitlines()[2:] == [
        "- day 0 email account.admin · hello (hello)", "- day 3 email account.admin · followup (followup)"]
