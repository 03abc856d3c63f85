"""workflows/preview.py: the preview is the message the `act` activity sends, header for header."""

from __future__ import annotations

import datetime as dt

import pytest
from temporalio.testing import ActivityEnvironment

from connectors import mail
from connectors.base import Connectors
from connectors.smtp import SmtpConnector, SmtpSettings
from dsl.plan import PlanTemplate
from engine import schema
from engine.store import Store
from peers import smtp_server
from wf_plans import email, plan, step
from workflows.accounts import StoreAccounts
from workflows.activities import PlayActivities
from workflows.model import StepContext, StepRequest
from workflows.play import idempotency_key
from workflows.preview import preview, uses

pytestmark = pytest.mark.anyio
AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
TEMPLATE = PlanTemplate(name="hello", subject="Hello {{ first_name }} at {{ name }}",
                        body="Hi {{ first_name }},\n\nyou use {{ usage_percent }}. {{ sender_name }}\n"
                             "Unsubscribe: {{ unsubscribe_url }}\n")
MAIL = mail.MailSettings(from_address="Acme CS <cs@us.test>", unsubscribe_mailto="unsubscribe@us.test")
UNSUBSCRIBE = "https://us.test/u?a={account_id}&c={contact}"  # no {key}: the preview's key is its own


@pytest.fixture
def store(tmp_path):
    from dsl.project import load_text

    catalog = load_text("entity account\n  field admin contact\n  field csm user\n"
                        "  field usage_percent percent\n").catalog
    with Store.open(f"sqlite:///{tmp_path / 'store.db'}", catalog=catalog) as st:
        with st.begin() as conn:
            conn.execute(st.table("account").insert(), [{"id": "acme", "name": "Acme", "admin": "c1",
                                                         "csm": "carol", "usage_percent": 0.85}])
            conn.execute(schema.Contact.__table__.insert(), [
                {"id": "c1", "account_id": "acme", "email": "ada@acme.test", "first_name": "Ada"}])
            conn.execute(schema.User.__table__.insert(), [{"id": "carol", "name": "Carol Chen"}])
        yield st


async def test_the_preview_is_the_message_the_activity_sends(store):
    from wf_plans import ref

    p = plan([step("hello", 1, email("hello"))], templates={"hello": TEMPLATE}, owner=ref("account.csm"))
    [use] = uses([p], "hello")
    with smtp_server() as (peer, port):
        connector = SmtpConnector(store, SmtpSettings(host="127.0.0.1", port=port, security="none"), MAIL)
        acts = PlayActivities(Connectors.single(connector), StoreAccounts(store, store.catalog), store.catalog,
                              unsubscribe_url=UNSUBSCRIBE)
        shown = await preview(acts, use, TEMPLATE, "acme", contact=None, at=AT, mail_settings=MAIL)
        ctx = StepContext(key=idempotency_key(p, "acme", "e1", use.path), play=p.play, plan_hash=p.hash,
                          account_id="acme", step=use.path, requested_at=AT)
        sent = await ActivityEnvironment().run(acts.act, StepRequest(
            ctx=ctx, action=use.step, templates={"hello": TEMPLATE}, sender=p.owner, play_title=p.title))
    assert sent.skipped is None and shown.message is not None
    [arrived] = peer.messages
    for header in ("From", "To", "Subject", "Date", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert str(shown.message[header]) == str(arrived[header]), header
    assert shown.message.get_content() == arrived.get_content().replace("\r\n", "\n")
    assert "you use 85%. Carol Chen" in shown.message.get_content()
    assert shown.message["Message-ID"] != arrived["Message-ID"]  # the preview has a key of its own
