"""engine/outcomes.py on SQLite and PostgreSQL: recording outcomes from the pipeline, the CLI and
files; idempotent by key; linked to the enrollment and opportunity; all-or-nothing imports."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine_support import Seed
from store_backends import BACKENDS, fresh_store
from engine import demo_data
from engine.importers import ImportFailed
from engine.outcomes import (OutcomeError, OutcomeInput, close_deals, enrollment_of_key, import_outcomes,
                             record_outcome)
from engine.schema import Base
from engine.store import Store

T = Base.metadata.tables
AT = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("outcomes")) as s:
        yield s


@pytest.fixture()
def seed(store: Store) -> Seed:
    demo_data.clear(store)
    s = Seed(store)
    s.accounts({"id": "a1"}, {"id": "a2"})
    return s


def enrollment(store: Store, account: str, play: str, started: dt.datetime, status: str = "running") -> int:
    with store.begin() as conn:
        return int(conn.execute(T["enrollments"].insert().values(
            workflow_id=f"play:{play}:{account}", play=play, account_id=account, plan_hash="h", status=status,
            started_at=started).returning(T["enrollments"].c.id)).scalar_one())


def opportunity(store: Store, opp_id: str, account: str, play: str, enr: int | None, amount: float | None,
                created: dt.datetime = AT, stage: str = "Proposal Sent") -> None:
    key = f"play:{play}:{account}:h:e{enr}:day3-opportunity" if enr is not None else None
    with store.begin() as conn:
        conn.execute(T["opportunities"].insert().values(id=opp_id, account_id=account, play=play, stage=stage,
                                                        amount=amount, idempotency_key=key, created_at=created,
                                                        updated_at=created))


def outcomes(store: Store) -> list[sa.Row]:
    with store.connect() as conn:
        return list(conn.execute(sa.select(T["outcomes"]).order_by(T["outcomes"].c.id)))


def test_the_enrollment_is_read_from_a_play_key() -> None:
    assert enrollment_of_key("play:usage_limit:acc-1:abc123:e42:day3-email") == 42
    assert enrollment_of_key("play:p:acc:with:colons:abc:e7:day0-email") == 7
    assert enrollment_of_key("play:p:acc:abc:20260101T000000Z:day0-email") is None
    assert enrollment_of_key(None) is None


def test_a_won_deal_takes_amount_play_and_enrollment_from_its_opportunity(store: Store, seed: Seed) -> None:
    enr = enrollment(store, "a1", "upsell", AT - dt.timedelta(days=10))
    opportunity(store, "o1", "a1", "upsell", enr, 12000.0)
    with store.begin() as conn:
        rec = record_outcome(conn, OutcomeInput("a1", "won", at=AT, opportunity_id="o1", reason="expansion",
                                                champion="ann@a1", approver="cfo@a1", source="pipeline"))
    assert (rec.play, rec.enrollment_id, rec.amount, rec.days_to_close, rec.key) == (
        "upsell", enr, 12000.0, 10.0, "opportunity:o1")
    (row,) = outcomes(store)
    assert (row.outcome, row.value, row.reason, row.champion, row.approver, row.source, row.days_to_close) == (
        "won", 12000.0, "expansion", "ann@a1", "cfo@a1", "pipeline", 10.0)


def test_recording_the_same_deal_twice_updates_one_row(store: Store, seed: Seed) -> None:
    opportunity(store, "o1", "a1", "upsell", None, 5000.0)
    with store.begin() as conn:
        first = record_outcome(conn, OutcomeInput("a1", "won", at=AT, opportunity_id="o1"))
    with store.begin() as conn:
        again = record_outcome(conn, OutcomeInput("a1", "won", amount=7000.0, at=AT, opportunity_id="o1"))
    assert (first.created, again.created, first.id) == (True, False, again.id)
    assert [(r.outcome, r.value) for r in outcomes(store)] == [("won", 7000.0)]


def test_the_cli_path_closes_the_accounts_open_opportunity(store: Store, seed: Seed) -> None:
    opportunity(store, "o1", "a1", "upsell", None, 5000.0, created=AT - dt.timedelta(days=4))
    with store.begin() as conn:
        rec = record_outcome(conn, OutcomeInput("a1", "lost", at=AT, reason="price"), close_opportunity=True)
    assert (rec.opportunity_id, rec.closed_stage, rec.days_to_close) == ("o1", "Closed Lost", 4.0)
    with store.connect() as conn:
        opp = conn.execute(sa.select(T["opportunities"]).where(T["opportunities"].c.id == "o1")).one()
        last = conn.execute(sa.select(T["stage_history"].c.stage)).scalars().all()
    assert (opp.stage, opp.closed_at) == ("Closed Lost", AT)
    assert last == ["Closed Lost"]


def test_a_won_without_a_deal_is_linked_to_the_latest_enrollment(store: Store, seed: Seed) -> None:
    enrollment(store, "a1", "upsell", AT - dt.timedelta(days=30), status="completed")
    late = enrollment(store, "a1", "upsell", AT - dt.timedelta(days=2))
    with store.begin() as conn:
        rec = record_outcome(conn, OutcomeInput("a1", "won", amount=100.0, at=AT))
    assert (rec.enrollment_id, rec.play, rec.key, rec.days_to_close) == (late, "upsell", f"enrollment:{late}", 2.0)


def test_churn_is_keyed_by_account_outcome_and_day(store: Store, seed: Seed) -> None:
    with store.begin() as conn:
        rec = record_outcome(conn, OutcomeInput("a2", "churned", amount=3000.0, at=AT))
    assert (rec.key, rec.enrollment_id, rec.days_to_close) == ("account:a2:churned:2026-06-01", None, None)


@pytest.mark.parametrize(("given", "message"), [
    (OutcomeInput("zz", "won"), "no account 'zz'"),
    (OutcomeInput("a1", "maybe"), "outcome must be one of won, lost, churned, contracted"),
    (OutcomeInput("a1", "won", amount=-1.0), "amount must be a number of at least 0"),
    (OutcomeInput("a1", "won", opportunity_id="nope"), "no opportunity 'nope'"),
    (OutcomeInput("a2", "won", opportunity_id="o1"), "belongs to account 'a1', not 'a2'"),
])
def test_an_outcome_that_cannot_be_recorded_says_why(store: Store, seed: Seed, given: OutcomeInput,
                                                     message: str) -> None:
    opportunity(store, "o1", "a1", "upsell", None, 5000.0)
    with pytest.raises(OutcomeError, match=message), store.begin() as conn:
        record_outcome(conn, given)
    assert outcomes(store) == []


def test_closing_deals_records_one_outcome_per_open_opportunity_or_running_enrollment(store: Store,
                                                                                       seed: Seed) -> None:
    opportunity(store, "o1", "a1", "upsell", None, 5000.0)
    enr = enrollment(store, "a2", "upsell", AT - dt.timedelta(days=3))
    won = close_deals(store, "a1", "upsell", "Closed Won", AT, source="simulation", actor="crm")
    lost = close_deals(store, "a2", None, "Closed Lost", AT, source="simulation", actor="crm")
    assert [(r.opportunity_id, r.outcome, r.amount, r.closed_stage) for r in won] == [
        ("o1", "won", 5000.0, "Closed Won")]
    assert [(r.enrollment_id, r.outcome, r.days_to_close) for r in lost] == [(enr, "lost", 3.0)]
    assert close_deals(store, "a1", "upsell", "Closed Won", AT, source="simulation", actor="crm") == []


def test_an_outcomes_file_is_recorded_and_a_second_import_updates(store: Store, seed: Seed, tmp_path: Path) -> None:
    f = tmp_path / "outcomes.csv"
    f.write_text("account_id,outcome,amount,closed_at,reason,objection,champion,approver\n"
                 "a1,won,\"12,000\",2026-05-01,expansion,price,ann,cfo\n"
                 "a2,churned,3000,2026-05-02T10:00:00Z,budget,,,\n")
    (first,) = import_outcomes(store, [f])
    (second,) = import_outcomes(store, [f])
    assert (first.rows, first.created, second.created, second.updated) == (2, 2, 0, 2)
    rows = outcomes(store)
    assert [(r.account_id, r.outcome, r.value, r.objection, r.source) for r in rows] == [
        ("a1", "won", 12000.0, "price", "csv"), ("a2", "churned", 3000.0, None, "csv")]


def test_a_bad_outcomes_file_writes_nothing_and_names_row_and_column(store: Store, seed: Seed,
                                                                      tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("account_id,outcome,amount,closed_at,color\n"
                 "a1,won,100,2026-05-01,\n"
                 "a1,wonn,-5,yesterday,\n"
                 "zz,lost,,,\n")
    with pytest.raises(ImportFailed) as err:
        import_outcomes(store, [f])
    got = [str(e) for e in err.value.errors]
    assert f"{f}:2: color: unknown column (known: account_id, outcome, amount, closed_at, play, opportunity_id, " \
           "enrollment_id, reason, objection, champion, approver, key)" in got
    assert f"{f}:3: outcome: expected one of won, lost, churned, contracted, found 'wonn'" in got
    assert any(g.startswith(f"{f}:3: amount: ") for g in got)
    assert any(g.startswith(f"{f}:3: closed_at: ") for g in got)
    assert f"{f}:4: account_id: no account 'zz' in the store" in got
    assert outcomes(store) == []  # row 2 was valid, and is not written either


def test_a_deal_the_pipeline_closes_gets_its_outcome_once(store: Store, seed: Seed) -> None:
    from engine import pipeline

    enr = enrollment(store, "a1", "upsell", AT - dt.timedelta(days=6))
    opportunity(store, "o1", "a1", "upsell", enr, 9000.0)
    pipeline.change_stage(store, "o1", "Closed Won", at=AT, actor="ae", reason="won:seats")
    pipeline.change_stage(store, "o1", "Closed Won", at=AT, actor="ae", reason="won:seats")  # no move: nothing new
    assert [(r.outcome, r.value, r.reason, r.source, r.enrollment_id, r.days_to_close) for r in outcomes(store)] == [
        ("won", 9000.0, "won:seats", "pipeline", enr, 6.0)]


def test_a_reason_must_be_a_code(store: Store, seed: Seed) -> None:
    with pytest.raises(OutcomeError, match="is not a code"), store.begin() as conn:
        record_outcome(conn, OutcomeInput("a1", "lost", reason="too expensive"))


def test_a_crm_closing_a_deal_gives_an_outcome_on_its_mirrored_opportunity(store: Store, seed: Seed) -> None:
    from engine import inbound

    opportunity(store, "o1", "a1", "upsell", None, 5000.0, created=AT - dt.timedelta(days=8))
    with store.begin() as conn:
        conn.execute(T["opportunities"].update().values(external_id="77"))

    def crm(key: str, stage: str, days: int) -> None:
        inbound.record(store, inbound.NewEvent(key=key, source="hubspot", kind="stage_changed", account_id="a1",
                                               stage=stage, occurred_at=AT + dt.timedelta(days=days),
                                               payload={"objectId": 77}))

    crm("hubspot:1", "Negotiation", 0)
    assert outcomes(store) == []  # not a close
    crm("hubspot:2", "Closed Won", 1)
    crm("hubspot:2", "Closed Won", 1)  # redelivered: recorded once
    [row] = outcomes(store)
    assert (row.outcome, row.opportunity_id, row.value, row.source, row.days_to_close, row.key) == (
        "won", "o1", 5000.0, "crm", 9.0, "opportunity:o1")
    crm("hubspot:3", "Closed Lost", 2)  # the CRM changed its mind: the same outcome, updated
    assert [(r.outcome, r.key) for r in outcomes(store)] == [("lost", "opportunity:o1")]


def test_a_deal_won_before_the_play_opened_one_is_worth_the_scorecard_estimate(tmp_path: Path) -> None:
    from report_data import CATALOG  # accounts with arr: the estimate is a fifth of it

    with fresh_store("sqlite", tmp_path, CATALOG) as s:
        with s.begin() as conn:
            conn.execute(s.table("account", CATALOG).insert(), [{"id": "a1", "arr": 50000.0}])
        enr = enrollment(s, "a1", "upsell", AT - dt.timedelta(days=3))
        [won] = close_deals(s, "a1", "upsell", "Closed Won", AT, source="simulation", actor="crm", catalog=CATALOG)
        assert (won.enrollment_id, won.amount) == (enr, 10000.0)
