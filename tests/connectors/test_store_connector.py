"""The built-in store connector: outbox, tasks, pipeline, audit; one action per key."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from connectors import base as cb
from connectors.store import StoreConnector
from dsl.project import load_text
from engine import schema
from engine.store import Store

pytestmark = pytest.mark.anyio
AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
ENTITY = """entity account
  field admin contact
  field csm user
  field flag bool
"""


@pytest.fixture
def store(tmp_path):
    catalog = load_text(ENTITY).catalog
    st = Store.open(f"sqlite:///{tmp_path / 'store.db'}", catalog=catalog)
    with st.begin() as conn:
        conn.execute(st.table("account").insert(), [{"id": "acme", "name": "Acme", "admin": "c1", "csm": "carol"}])
        conn.execute(schema.Contact.__table__.insert(), [
            {"id": "c1", "account_id": "acme", "email": "ada@acme.test", "first_name": "Ada", "unsubscribed_at": None},
            {"id": "c2", "account_id": "acme", "email": "gone@acme.test", "first_name": None, "unsubscribed_at": AT},
        ])
    yield st
    st.close()


def act(key: str = "play:p:acme:h:e:s1") -> dict:
    return {"key": key, "account_id": "acme", "actor": "play:p", "play": "p", "step": key.rsplit(":", 1)[-1], "requested_at": AT}


def rows(st: Store, table: str) -> list[dict]:
    with st.connect() as conn:
        t = schema.Base.metadata.tables[table] if table in schema.Base.metadata.tables else st.table("account")
        return [dict(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns)).mappings()]


def email(key: str = "play:p:acme:h:e:s1", to: str = "ada@acme.test") -> cb.EmailMessage:
    return cb.EmailMessage(**act(key), to=to, subject="Hi", body="Hi Ada", template="hello")


async def test_email_goes_to_the_outbox_once_per_key(store):
    conn = StoreConnector(store)
    first = await conn.send_email(email())
    again = await conn.send_email(email())
    other = await conn.send_email(email("play:p:acme:h:e:s2"))
    assert not first.duplicate and again.duplicate and again.external_id == first.external_id
    assert not other.duplicate
    outbox = rows(store, "outbox")
    assert [(r["idempotency_key"], r["status"], r["channel"], r["recipient"]) for r in outbox] == [
        ("play:p:acme:h:e:s1", "pending", "email", "ada@acme.test"),
        ("play:p:acme:h:e:s2", "pending", "email", "ada@acme.test"),
    ]
    assert outbox[0]["body"] == "Hi Ada" and outbox[0]["account_id"] == "acme" and outbox[0]["play"] == "p"
    assert [r["subject"] for r in rows(store, "audit_log")] == ["play:p:acme:h:e:s1", "play:p:acme:h:e:s2"]


async def test_email_to_unsubscribed_contact_is_recorded_not_sent(store):
    await StoreConnector(store).send_email(email(to="gone@acme.test"))
    assert rows(store, "outbox")[0]["status"] == "cancelled"


async def test_task_once_per_key(store):
    conn = StoreConnector(store)
    task = cb.NewTask(**act(), assignee="carol", title="Call", due_at=AT + dt.timedelta(days=2))
    assert not (await conn.create_task(task)).duplicate
    assert (await conn.create_task(task)).duplicate
    [row] = rows(store, "tasks")
    assert row["assignee"] == "carol" and row["status"] == "open" and row["title"] == "Call"


async def test_opportunity_then_stage_changes_keep_history_with_time_and_actor(store):
    conn = StoreConnector(store)
    opp = await conn.create_opportunity(cb.NewOpportunity(**act("k:opp"), title="Upgrade", amount=2400.0, owner="carol"))
    moved = await conn.change_stage(cb.StageChange(**act("k:stage"), stage="Proposal Sent"))
    again = await conn.change_stage(cb.StageChange(**act("k:stage"), stage="Proposal Sent"))
    assert moved.external_id == opp.external_id and moved.previous == "Trigger Fired" and again.duplicate
    [deal] = rows(store, "opportunities")
    assert deal["stage"] == "Proposal Sent" and deal["amount"] == 2400.0 and deal["closed_at"] is None
    history = [(r["from_stage"], r["stage"], r["actor"]) for r in rows(store, "stage_history")]
    assert history == [(None, "Trigger Fired", "play:p"), ("Trigger Fired", "Proposal Sent", "play:p")]
    won = await conn.change_stage(cb.StageChange(**act("k:won"), stage="Closed Won"))
    assert won.previous == "Proposal Sent" and rows(store, "opportunities")[0]["closed_at"] is not None


async def test_stage_without_opportunity_opens_one(store):
    result = await StoreConnector(store).change_stage(cb.StageChange(**act(), stage="Qualified"))
    assert result.previous is None
    assert [r["stage"] for r in rows(store, "opportunities")] == ["Qualified"]


async def test_a_stage_outside_the_pipeline_is_a_permanent_error_naming_it(store):
    with pytest.raises(cb.PermanentError, match="unknown stage 'Discovery'"):
        await StoreConnector(store).change_stage(cb.StageChange(**act(), stage="Discovery"))
    assert rows(store, "opportunities") == []


async def test_a_play_never_moves_a_deal_back_behind_where_a_person_moved_it(store):
    conn = StoreConnector(store)
    await conn.change_stage(cb.StageChange(**act("k:1"), stage="Negotiation"))
    result = await conn.change_stage(cb.StageChange(**act("k:2"), stage="Proposal Sent"))
    assert (result.previous, result.stage) == ("Negotiation", "Negotiation")
    assert [r["stage"] for r in rows(store, "opportunities")] == ["Negotiation"]
    assert len(rows(store, "stage_history")) == 1


async def test_a_closing_stage_step_with_no_open_deal_opens_none(store):
    result = await StoreConnector(store).change_stage(cb.StageChange(**act(), stage="Closed Lost"))
    assert result.external_id is None and rows(store, "opportunities") == []


async def test_notify_and_webhook_are_outbox_rows(store):
    conn = StoreConnector(store)
    await conn.act(cb.Notification(**act("k:n"), channel="#cs", message="hi"))
    await conn.act(cb.WebhookCall(**act("k:w"), url="https://h.test", event="go", payload={"a": 1}))
    assert [(r["channel"], r["recipient"]) for r in rows(store, "outbox")] == [("notify", "#cs"), ("webhook", "https://h.test")]


async def test_set_field_once_and_unknown_field_is_permanent(store):
    conn = StoreConnector(store)
    change = cb.FieldChange(**act(), field="account.flag", value=True)
    assert (await conn.set_field(change)).previous is None
    assert (await conn.set_field(change.model_copy(update={"value": False}))).duplicate
    with store.connect() as c:
        assert c.execute(sa.text("select flag from accounts where id='acme'")).scalar() == 1
    with pytest.raises(cb.PermanentError) as info:
        await conn.set_field(cb.FieldChange(**act("k:x"), field="account.nope", value=1))
    assert info.value.retryable is False


async def test_trial_recorded_once(store):
    conn = StoreConnector(store)
    grant = cb.TrialGrant(**act(), feature="sso", ends_at=AT + dt.timedelta(days=14))
    assert not (await conn.enable_trial(grant)).duplicate
    assert (await conn.enable_trial(grant)).duplicate


@pytest.fixture
def new_kinds():
    """Action classes a test defines register a step kind; forget them afterwards."""
    before = dict(cb.ACTIONS)
    yield
    cb.ACTIONS.clear()
    cb.ACTIONS.update(before)


async def test_a_new_message_kind_lands_in_the_outbox_on_its_own_channel(store, new_kinds):
    class Fax(cb.OutboxMessage):
        kind = "fax"
        number: str
        text: str

        def outbox(self) -> tuple[str, str | None, str]:
            return self.number, None, self.text

    conn = StoreConnector(store)
    first = await conn.act(Fax(**act("k:fax"), number="+1 555 0100", text="Hello"))
    again = await conn.act(Fax(**act("k:fax"), number="+1 555 0100", text="Hello"))
    assert (first.duplicate, again.duplicate) == (False, True)
    [row] = rows(store, "outbox")
    assert (row["channel"], row["recipient"], row["body"], row["status"]) == ("fax", "+1 555 0100", "Hello", "pending")


async def test_a_new_kind_without_a_table_is_recorded_once_in_the_audit_log(store, new_kinds):
    class Survey(cb.Action):
        kind = "survey"
        form: str

    conn = StoreConnector(store)
    assert not (await conn.act(Survey(**act("k:survey"), form="nps"))).duplicate
    assert (await conn.act(Survey(**act("k:survey"), form="nps"))).duplicate
    audit = [r for r in rows(store, "audit_log") if r["action"] == "survey.request"]
    assert [(r["subject"], r["detail"]) for r in audit] == [("k:survey", {"form": "nps"})]


# ---------------------------------------------------------------------------
# One account field for another connector (HubSpot's company id): account_field

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def company_store(request, tmp_path):
    """A store whose accounts have a declared hubspot_company_id: on SQLite, and on PostgreSQL
    in a schema of its own (dropped afterwards); PostgreSQL not answering fails the test."""
    catalog = load_text("entity account\n  field hubspot_company_id text\n").catalog
    if request.param == "sqlite":
        st = Store.open(f"sqlite:///{tmp_path / 'store.db'}", catalog=catalog)
        admin, name = None, None
    else:
        import uuid

        name = f"pb_hubspot_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        st = Store.open(f"{PG_URL}?options=-csearch_path%3D{name}", catalog=catalog)
    try:
        with st.begin() as conn:
            conn.execute(st.table("account").insert(), [{"id": "acme", "name": "Acme", "hubspot_company_id": "31337"},
                                                        {"id": "beta", "name": "Beta", "hubspot_company_id": None}])
        yield st
    finally:
        st.close()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
            admin.dispose()


async def test_account_field_reads_one_field_of_one_account(company_store):
    from connectors.store import account_field

    company = account_field(company_store, "hubspot_company_id")
    assert [await company("acme"), await company("beta"), await company("nobody")] == ["31337", None, None]


async def test_account_field_names_a_field_the_store_does_not_have(company_store):
    from connectors.store import account_field

    with pytest.raises(cb.PermanentError, match="the store's accounts have no field 'hubspot_id'"):
        await account_field(company_store, "hubspot_id")("acme")
