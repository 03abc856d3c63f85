"""A hard bounce (5xx at RCPT) through the `act` activity and a running play, over a real SMTP server."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from temporalio.testing import ActivityEnvironment

from connectors import mail
from connectors.base import Connectors
from connectors.smtp import SmtpConnector, SmtpSettings
from dsl.catalog import Catalog
from dsl.project import load_text
from engine import schema
from engine.store import Store
from peers import smtp_server
from wf_plans import TEMPLATES, email, plan, step, sym
from workflow_support import ACCOUNTS, harness
from workflows.accounts import StoreAccounts
from workflows.activities import PlayActivities, StaticAccounts
from workflows.client import start_play
from workflows.model import Outcome, PlayInput, StepContext, StepRequest

pytestmark = pytest.mark.anyio
AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
GONE = "ada@acme.test"  # acme's admin in workflow_support.ACCOUNTS and in the store below


PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@contextmanager
def backend(kind: str, folder: Path, catalog: Catalog) -> Iterator[Store]:
    """A fresh store: a SQLite file, or a schema of its own in PostgreSQL's `test` database (dropped after)."""
    if kind == "sqlite":
        with Store.open(f"sqlite:///{folder}/store.db", catalog=catalog) as st:
            yield st
        return
    schema_name = f"pb_bounce_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema_name}"'))
    except sa.exc.OperationalError as exc:  # as tests/engine/store_backends.py: skipped, with the reason
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({str(exc.orig).strip()[:120]})")
    try:
        with Store.open(f"{PG_URL}?options=-csearch_path%3D{schema_name}", catalog=catalog) as st:
            yield st
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema_name}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    catalog = load_text("entity account\n  field admin contact\n  field usage_percent percent\n").catalog
    with backend(request.param, tmp_path, catalog) as st:
        seed(st)
        yield st


def seed(st: Store) -> None:
    with st.begin() as conn:
        conn.execute(st.table("account").insert(), [{"id": "acme", "name": "Acme", "admin": "c1",
                                                     "usage_percent": 0.85}])
        conn.execute(schema.Contact.__table__.insert(), [
            {"id": "c1", "account_id": "acme", "email": GONE, "first_name": "Ada"},
            {"id": "c2", "account_id": "acme", "email": "bob@acme.test", "first_name": "Bob"},
        ])


def smtp(store: Store, port: int) -> SmtpConnector:
    return SmtpConnector(store, SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=5.0),
                         mail.MailSettings(from_address="cs@us.test"))


def request(step_label: str, to: str = "account.admin") -> StepRequest:
    ctx = StepContext(key=f"play:usage_limit:acme:h:e:{step_label}", play="usage_limit", plan_hash="h",
                      account_id="acme", step=step_label, requested_at=AT)
    return StepRequest(ctx=ctx, action=email("hello", to), templates={"hello": TEMPLATES["hello"]})


def outbox(store: Store) -> list[dict]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(schema.OutboxMessage.__table__)
                                              .order_by(schema.OutboxMessage.__table__.c.id)).mappings()]


async def test_a_hard_bounce_skips_the_step_marks_the_contact_and_every_later_send_skips_it(store):
    with smtp_server() as (peer, port):
        peer.refuse(GONE, "550 5.1.1 no such user")
        acts = PlayActivities(Connectors.single(smtp(store, port)), StoreAccounts(store, store.catalog), store.catalog)
        env = ActivityEnvironment()
        first = await env.run(acts.act, request("day1"))
        later = await env.run(acts.act, request("day3"))
        rcpts_after_bounce = peer.commands.count("RCPT")
    assert first.skipped is not None and "bounced: 550" in first.skipped and not first.duplicate
    assert later.skipped is not None and "bounced earlier" in later.skipped
    assert rcpts_after_bounce == 1  # the later step never reached the server
    with store.connect() as conn:
        bounced = {r[0]: r[1] for r in conn.execute(sa.select(schema.Contact.__table__.c.id,
                                                              schema.Contact.__table__.c.bounced_at))}
    assert bounced == {"c1": AT, "c2": None}
    [row] = outbox(store)
    assert row["status"] == "failed" and "550" in row["last_error"]


async def test_a_4xx_at_rcpt_is_retried_not_a_bounce(store):
    with smtp_server() as (peer, port):
        peer.script("RCPT", "450 4.2.1 mailbox busy")
        acts = PlayActivities(Connectors.single(smtp(store, port)), StoreAccounts(store, store.catalog), store.catalog)
        with pytest.raises(Exception) as err:
            await ActivityEnvironment().run(acts.act, request("day1"))
        assert "450" in str(err.value) and getattr(err.value, "non_retryable", False) is False
        retried = await ActivityEnvironment().run(acts.act, request("day1"))
    assert retried.skipped is None and len(peer.messages) == 1
    with store.connect() as conn:
        assert conn.execute(sa.select(schema.Contact.__table__.c.bounced_at)
                            .where(schema.Contact.__table__.c.id == "c1")).scalar() is None


async def test_a_hard_bounce_exits_a_play_that_exits_on_bounced(store):
    p = plan([step("hello", 0, email()), step("followup", 3, email("followup"))], exit=sym("bounced"))
    accounts = StaticAccounts(ACCOUNTS)
    with smtp_server() as (peer, port):
        peer.refuse(GONE, "550 5.1.1 no such user")
        async with harness(connector=smtp(store, port), accounts=accounts) as h:
            now = await h.env.get_current_time()
            handle = await start_play(h.client, PlayInput(plan=p, account_id="acme", enrolled_at=now),
                                      task_queue=h.task_queue)
            result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "exited" and "bounced" in result.reason
    decisions = [(d.step, d.outcome) for d in result.decisions]
    assert decisions == [("hello", Outcome.SKIPPED), ("followup", Outcome.EXITED)]
    assert peer.messages == [] and peer.commands.count("RCPT") == 1
    assert GONE in accounts.bounced
