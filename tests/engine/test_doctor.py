"""engine/doctor.py on SQLite and PostgreSQL: each check's verdict and numbers on a seeded store,
the thresholds' boundaries, and `no data` on an empty store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from doctor_data import TODAY, catalog, seed, seed_pipeline
from store_backends import BACKENDS, fresh_store
from dsl.evaluator import gate_passes
from dsl.project import load, load_text
from engine import doctor as d
from engine.demo_data import generate
from engine.evaluate import snapshot
from engine.schema import Base
from engine.settings import SettingsError
from engine.store import Store


PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("doctor"), catalog()) as s:
        seed(s)
        yield s


@pytest.fixture(scope="module", params=BACKENDS)
def empty(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("doctor-empty"), catalog()) as s:
        yield s


def run(store: Store, cost: float | None = None) -> dict[str, list[d.Finding]]:
    with store.connect() as conn:
        report = d.doctor(conn, catalog(), today=TODAY, cost=cost)
    out: dict[str, list[d.Finding]] = {}
    for f in report.findings:
        out.setdefault(f.check, []).append(f)
    return out


@pytest.mark.parametrize(("value", "expected"), [
    (0.15, d.FAIL), (0.151, d.WARN), (0.25, d.WARN), (0.251, d.PASS), (0.40, d.PASS), (0.0, d.FAIL)])
def test_higher_is_better_benchmarks_fail_at_the_minimum_and_pass_above_good(value: float, expected: str) -> None:
    assert d.higher_better(value, d.CSQL_TO_CLOSE) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (15.0, d.FAIL), (14.9, d.WARN), (10.0, d.WARN), (9.9, d.PASS), (6.0, d.PASS)])
def test_lower_is_better_benchmarks_fail_at_the_minimum_and_pass_under_good(value: float, expected: str) -> None:
    assert d.lower_better(value, d.PROPOSAL_DAYS) == expected


def test_level_names_the_best_level_met() -> None:
    assert d.level_name(0.36, d.CSQL_TO_CLOSE) == "excellent"
    assert d.level_name(0.10, d.CSQL_TO_CLOSE) == "below minimum"
    assert d.level_name(0.21, d.CAC_PER_ARR, higher=False) == "good"


def test_business_days_skip_weekends() -> None:
    friday = dt.date(2026, 5, 29)
    assert d.business_days(friday, dt.date(2026, 6, 1)) == 1  # Monday
    assert d.business_days(friday, dt.date(2026, 6, 12)) == 10
    assert d.business_days(friday, friday) == 0


def test_gate_share_per_segment_fails_outside_15_to_60_percent(store: Store) -> None:
    found = {f.subject: f for f in run(store)["gate_share"]}
    smb, ent = found["ready (segment == smb)"], found["ready (segment == enterprise)"]
    assert (smb.status, smb.details) == (d.FAIL, {"passing": 2, "accounts": 20})
    assert "too strict" in smb.advice
    assert (ent.status, ent.details, ent.value) == (d.PASS, {"passing": 5, "accounts": 10}, 0.5)


def test_gate_first_is_the_share_of_expanded_accounts_enrolled_past_the_gate_before(store: Store) -> None:
    [f] = run(store)["gate_first"]
    assert (f.subject, f.status, f.details) == ("ready", d.FAIL, {"met_first": 3, "expanded": 4})
    assert "75%" in f.shown


def test_fire_rate_over_40_percent_fails_with_the_seeds_advice(store: Store) -> None:
    found = {f.subject: f for f in run(store)["fire_rate"]}
    f = found["t_usage"]
    assert (f.status, f.details["fired"], f.details["eligible"], f.details["quarter"]) == (d.FAIL, 15, 30, "2026-Q2")
    assert f.advice.startswith("raise the threshold")


def test_a_trigger_that_never_fires_names_the_empty_fields_it_reads(store: Store) -> None:
    f = {f.subject: f for f in run(store)["fire_rate"]}["t_promoter"]
    assert (f.status, f.value) == (d.FAIL, 0.0)
    assert f.details["empty_fields"] == {"nps": round(28 / 30, 4)}
    assert "nps empty on 93.3%" in f.advice
    assert "health_score" not in f.advice  # filled everywhere


def test_whitespace_counts_strong_or_possible_among_healthy_accounts(store: Store) -> None:
    [f] = run(store)["whitespace"]
    # healthy: 80+, the lowest bar of gate `ready` (no gate for every account): the 7 accounts at 95;
    # product_fit 3 -> 60 (possible) on a00..a07, so a00 and a01
    assert (f.status, f.details) == (d.FAIL, {"opportunities": 2, "healthy": 7, "health_threshold": 80.0,
                                              "health_threshold_from": "gate ready (doctor.play:13)"})
    assert "health 80+" in f.shown and "threshold from gate ready (doctor.play:13)" in f.shown


def test_the_doctor_setting_sets_the_health_threshold(store: Store) -> None:
    with store.connect() as conn:
        report = d.doctor(conn, catalog(), today=TODAY, only=["whitespace"],
                          settings=d.DoctorSettings(health_threshold=60))
    [f] = report.findings
    # health 60+: all 30; product_fit 3 on 8 of them
    assert (f.details["opportunities"], f.details["healthy"]) == (8, 30)
    assert f.details["health_threshold_from"].startswith("setting health_threshold in [doctor] of ")


def test_the_health_threshold_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAYBOOK_DOCTOR_HEALTH_THRESHOLD", "65")
    h = d.health_threshold(catalog(), d.load_doctor_settings())
    assert (h.value, h.source) == (65.0, "setting PLAYBOOK_DOCTOR_HEALTH_THRESHOLD")
    monkeypatch.setenv("PLAYBOOK_DOCTOR_HEALTH_THRESHOLD", "-1")
    with pytest.raises(SettingsError, match="PLAYBOOK_DOCTOR_HEALTH_THRESHOLD or \\[doctor\\]"):
        d.load_doctor_settings()


def test_a_gate_for_every_account_sets_the_health_threshold_before_segment_gates() -> None:
    h = d.health_threshold(load([PLAYBOOKS]).catalog)
    # playbooks/gates.play: `qualified` requires 60+; expansion_ready's segments 75, 80, 85
    assert (h.value, h.strict) == (60.0, False)
    assert h.source.startswith("gate qualified (") and "gates.play:" in h.source


def test_without_a_health_gate_the_seeds_60_is_used_and_said() -> None:
    h = d.health_threshold(load_text("entity account\n  field health_score number?\n", "a.play").catalog)
    assert h.value == 60.0 and h.source.startswith("the seeds' default")


def test_trigger_accuracy_is_fired_then_won(store: Store) -> None:
    with store.connect() as conn:
        [f] = d.doctor(conn, catalog(), today=dt.date(2026, 7, 15), only=["trigger_accuracy"]).findings
    # t_usage fired on the 15 odd accounts on 10 April, 96 days before: old enough (no won outcome
    # records its days to close: 90); a01, a03, a05 won afterwards (a10 won but never fired)
    assert (f.status, f.details) == (d.FAIL, {"converted": 3, "fired": 15, "judged": 15, "window_days": 90})
    assert "20%" in f.shown and "fires at least 90 days old" in f.shown


def test_trigger_accuracy_waits_for_fires_old_enough_to_have_closed(store: Store) -> None:
    [f] = run(store)["trigger_accuracy"]  # 1 June: the fires of 10 April are 52 days old
    assert (f.status, f.details) == (d.NO_DATA, {"fired": 15, "judged": 0, "window_days": 90})
    assert "none of the 15 fired accounts is old enough" in f.shown


def test_churn_drag_fails_when_expanded_accounts_churn_more(store: Store) -> None:
    [f] = run(store)["churn_drag"]
    assert (f.status, f.details) == (d.FAIL, {"expanded": 4, "expanded_churned": 2, "others": 26,
                                              "others_churned": 1})


def test_cac_needs_a_cost_and_is_judged_per_dollar_of_expansion_arr(store: Store) -> None:
    [none] = run(store)["expansion_cac"]
    assert none.status == d.NO_DATA and "--cost" in none.shown
    [f] = run(store, cost=4800.0)["expansion_cac"]  # 4,800 / 24,000 = 0.20
    assert (f.status, f.value) == (d.PASS, 0.2)
    [g] = run(store, cost=8400.0)["expansion_cac"]  # 0.35: not under the minimum
    assert g.status == d.FAIL


def test_pipeline_checks_without_deals_say_what_is_missing(store: Store) -> None:
    found = run(store)
    for name in ("qualified_stalling", "trigger_to_proposal", "csql_to_close", "self_serve_upgrade"):
        [f] = found[name]
        assert f.status == d.NO_DATA and f.value is None, name


def test_an_empty_store_gives_no_data_lines_not_failures(empty: Store) -> None:
    found = run(empty)
    statuses = {f.check: f.status for fs in found.values() for f in fs}
    assert set(statuses.values()) == {d.NO_DATA}
    assert "playbook import" in found["gate_share"][0].shown
    assert "playbook sweep" in found["fire_rate"][0].shown
    assert "outcomes=FILE" in found["churn_drag"][0].shown


def test_reads_follows_lets_and_scores_to_fields_and_series() -> None:
    cat = catalog()
    assert d.reads(cat, cat.triggers["t_promoter"].when) == (["nps", "health_score"], [], [])
    assert d.reads(cat, cat.gates["ready"])[0] == ["segment", "health_score"]


@pytest.fixture(scope="module", params=BACKENDS)
def deals(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("doctor-deals"), catalog()) as s:
        seed_pipeline(s)
        yield s


def test_a_deal_at_qualified_past_10_business_days_is_stalling(deals: Store) -> None:
    [f] = run(deals)["qualified_stalling"]
    assert (f.status, f.details) == (d.WARN, {"stalled": 1, "at_qualified": 2, "ever_qualified": 3})
    assert "sales overlay" in f.advice


def test_trigger_to_proposal_of_10_business_days_is_not_yet_good(deals: Store) -> None:
    [f] = run(deals)["trigger_to_proposal"]
    assert (f.status, f.value, f.details) == (d.WARN, 10.0, {"proposals": 2})


def test_csql_to_close_of_25_percent_is_not_over_good(deals: Store) -> None:
    [f] = run(deals)["csql_to_close"]
    assert (f.status, f.value, f.details) == (d.WARN, 0.25, {"won": 1, "csqls": 4})


def test_self_serve_upgrade_counts_low_touch_accounts_that_won_afterwards(deals: Store) -> None:
    [f] = run(deals)["self_serve_upgrade"]
    assert (f.status, f.value, f.details) == (d.PASS, 0.1, {"upgraded": 2, "low_touch": 20, "judged": 20,
                                                            "window_days": 90})  # b00, b01


def test_self_serve_upgrade_waits_for_enrollments_old_enough_to_have_bought(deals: Store) -> None:
    with deals.connect() as conn:  # enrolled 1 October 2025: 45 days before
        [f] = d.doctor(conn, catalog(), today=dt.date(2025, 11, 15), only=["self_serve_upgrade"]).findings
    assert (f.status, f.details) == (d.NO_DATA, {"low_touch": 20, "judged": 0, "window_days": 90})
    assert "none of the 20 low-touch accounts is old enough" in f.shown


def test_nrr_falling_while_expansion_rises_fails(deals: Store) -> None:
    [f] = run(deals)["nrr_drag"]
    assert f.status == d.FAIL
    assert f.details["expansion_arr"] == [1000.0, 2000.0]
    assert [round(x, 4) for x in f.details["nrr"]] == [1.005, 0.96]
    assert "2025-Q4 and 2026-Q1" in f.shown and "85+" in f.advice


def test_gate_first_without_a_sweep_since_the_wins_is_no_data(deals: Store) -> None:
    [f] = run(deals)["gate_first"]
    assert f.status == d.NO_DATA and "playbook sweep" in f.shown


@pytest.fixture(scope="module", params=BACKENDS)
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Any]]:
    cat = load([PLAYBOOKS]).catalog
    with fresh_store(request.param, tmp_path_factory.mktemp("doctor-demo"), cat) as s:
        generate(cat, 1_000, seed=7, today=TODAY, store=s, chunk_size=500)
        yield s, cat


def test_demo_gate_shares_agree_with_the_reference_evaluator_and_are_too_strict(demo: tuple[Store, Any]) -> None:
    store, cat = demo
    with store.connect() as conn:
        found = {f.subject: f for f in d.doctor(conn, cat, today=TODAY, only=["gate_share"]).findings}
        accounts = store.table("account", cat)
        by_segment: dict[str, list[str]] = {}
        for aid, seg in conn.execute(sa.select(accounts.c.id, accounts.c.segment)):
            by_segment.setdefault(seg, []).append(aid)
        for seg in ("mid_market", "enterprise"):
            ids = by_segment[seg]
            passing = sum(gate_passes("expansion_ready", snapshot(conn, cat, accounts, a), cat, TODAY)  # type: ignore[arg-type]
                          for a in ids)
            f = found[f"expansion_ready (segment == {seg})"]
            assert f.details == {"passing": passing, "accounts": len(ids)}, seg
            assert f.status == d.FAIL and "too strict" in f.advice, seg  # the issue: 2.7% and 4.7% on the demo


def test_reads_names_the_shipped_triggers_fields_and_series() -> None:
    cat = load([PLAYBOOKS]).catalog
    assert d.reads(cat, cat.triggers["seat_saturation"].when) == (["seats_active", "seats_purchased"], [], [])
    assert d.reads(cat, cat.triggers["feature_exploration"].when) == (
        ["requested_feature"], [], ["gated_feature_explored"])
    fields, metrics, events = d.reads(cat, cat.triggers["cross_sell_fit"].when)
    assert {"product_fit", "champion_strength", "cross_sell_product"} <= set(fields)
    assert (metrics, events) == ([], ["cross_sell_interest"])
    assert d.reads(cat, cat.triggers["power_user_emergence"].when) == (
        ["cohort_engagement_minutes"], ["engagement_minutes"], [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_churn_drag_counts_only_churn_after_the_first_win(backend: str, tmp_path: Path) -> None:
    def at(month: int) -> dt.datetime:
        return dt.datetime(2026, month, 1, 9, tzinfo=dt.timezone.utc)

    with fresh_store(backend, tmp_path, catalog()) as s:
        with s.begin() as conn:
            conn.execute(s.table("account", catalog()).insert(), [{"id": f"x{i}"} for i in range(1, 5)])
            conn.execute(Base.metadata.tables["outcomes"].insert(), [
                {"account_id": a, "outcome": o, "at": at(m), "key": f"{a}{o}", "source": "csv"}
                for a, o, m in (("x1", "churned", 1), ("x1", "won", 5), ("x2", "won", 2), ("x2", "churned", 4),
                                ("x3", "churned", 3))])
        with s.connect() as conn:
            [f] = d.doctor(conn, catalog(), today=TODAY, only=["churn_drag"]).findings
    # x1 churned before it expanded: not the expansion's churn
    assert (f.status, f.details) == (d.PASS, {"expanded": 2, "expanded_churned": 1, "others": 2, "others_churned": 1})
