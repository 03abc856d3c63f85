"""A retried, replayed or re-run step never acts twice: checked on the store's outbox rows."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from connectors import base as cb
from connectors.store import StoreConnector
from dsl import nodes as n
from dsl.plan import PlanTemplate
from dsl.project import load_text
from engine import schema
from engine.store import Store
from workflows.accounts import StoreAccounts
from workflows.client import start_play
from workflows.model import Outcome, PlayInput
from wf_plans import email, plan, ref, step
from workflow_support import harness

pytestmark = pytest.mark.anyio
OUTBOX = schema.OutboxMessage.__table__
ENTITY = """entity account
  field admin contact
  field csm user
"""
TEMPLATES = {"hello": PlanTemplate(name="hello", subject="For {{ name }}", body="Hi {{ recipient.first_name }},")}


class CommitThenCrash:
    """The store connector, but the first attempt of each key dies after its commit
    (a worker killed between writing the outbox row and reporting success)."""

    def __init__(self, inner: StoreConnector) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}

    async def act(self, action: cb.Action) -> cb.Result:
        result = await self.inner.act(action)
        if isinstance(action, (cb.EmailMessage, cb.NewTask)):
            self.calls[action.key] = self.calls.get(action.key, 0) + 1
            if self.calls[action.key] == 1:
                raise cb.TransientError("connection reset after commit")
        return result


@pytest.fixture
def store(tmp_path):
    catalog = load_text(ENTITY).catalog
    st = Store.open(f"sqlite:///{tmp_path / 'store.db'}", catalog=catalog)
    with st.begin() as conn:
        conn.execute(st.table("account").insert(), [{"id": "acme", "name": "Acme", "admin": "c1", "csm": "carol"}])
        conn.execute(schema.Contact.__table__.insert(), [
            {"id": "c1", "account_id": "acme", "email": "ada@acme.test", "first_name": "Ada", "unsubscribed_at": None}])
    yield st, catalog
    st.close()


def outbox(st: Store) -> list[sa.Row]:
    with st.connect() as conn:
        return list(conn.execute(sa.select(OUTBOX.c.idempotency_key, OUTBOX.c.recipient, OUTBOX.c.subject, OUTBOX.c.body)))


async def test_retry_after_a_crash_does_not_send_twice(store):
    st, catalog = store
    flaky = CommitThenCrash(StoreConnector(st))
    p = plan([step("hello", 0, email("hello")), step("call", 1, n.TaskStep(assignee=ref("account.csm"), title="Call"))],
             templates=TEMPLATES)
    async with harness(flaky, StoreAccounts(st, catalog)) as h:
        now = await h.env.get_current_time()
        handle = await start_play(h.client, PlayInput(plan=p, account_id="acme", enrolled_at=now), task_queue=h.task_queue)
        result = await asyncio.wait_for(handle.result(), 60)
    rows = outbox(st)
    assert len(rows) == 1
    assert rows[0].recipient == "ada@acme.test" and rows[0].subject == "For Acme" and rows[0].body == "Hi Ada,"
    assert st.count("tasks") == 1
    assert all(count == 2 for count in flaky.calls.values())  # each step really was attempted twice
    assert [d.outcome for d in result.decisions] == [Outcome.DUPLICATE, Outcome.DUPLICATE]


async def test_rerunning_an_enrollment_acts_on_nothing_again(store):
    """A reset (or a lost-and-restarted run) replays the same enrollment: same keys, no new rows."""
    st, catalog = store
    p = plan([step("hello", 0, email("hello")), step("later", 2, email("hello"))], templates=TEMPLATES)
    async with harness(StoreConnector(st), StoreAccounts(st, catalog)) as h:
        now = await h.env.get_current_time()
        inp = PlayInput(plan=p, account_id="acme", enrolled_at=now)
        first = await asyncio.wait_for((await start_play(h.client, inp, task_queue=h.task_queue)).result(), 60)
        again = await asyncio.wait_for((await start_play(h.client, inp, task_queue=h.task_queue)).result(), 60)
        # A new enrollment (re-entry after a cooldown) is a different key: it does act.
        # (The test server's clock may leap ahead after a run closes: read it again.)
        later = inp.model_copy(update={"enrolled_at": await h.env.get_current_time()})
        third = await asyncio.wait_for((await start_play(h.client, later, task_queue=h.task_queue)).result(), 60)
    assert [d.outcome for d in first.decisions] == [Outcome.RAN, Outcome.RAN]
    # Started later with the same enrolled_at: both steps are past due, run at once, act on nothing.
    assert [d.outcome for d in again.decisions if d.outcome is not Outcome.LATE] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert [d.outcome for d in third.decisions] == [Outcome.RAN, Outcome.RAN]
    assert len(outbox(st)) == 4
