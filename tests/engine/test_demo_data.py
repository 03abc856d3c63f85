"""Demo data: plausible distributions, every declared field filled, triggers fire on a plausible share."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from dsl.project import load, load_text
from engine import schema
from engine.demo_data import SCENARIOS, DemoDataError, History, default_history, generate
from engine.store import Store
from store_backends import BACKENDS, fresh_store

TODAY = dt.date(2026, 6, 1)
N = 2_000
PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


@pytest.fixture(scope="module")
def catalog():
    return load([PLAYBOOKS]).catalog


@pytest.fixture(scope="module", params=BACKENDS)
def demo(request, tmp_path_factory, catalog):
    progress: list[tuple[str, int, int]] = []
    with fresh_store(request.param, tmp_path_factory.mktemp("demo"), catalog) as store:
        result = generate(catalog, N, seed=7, today=TODAY, store=store, chunk_size=500,
                          progress=lambda *a: progress.append(a))
        yield store, result, progress


def rows(store: Store) -> list[dict]:
    accounts = store.table("account")
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(accounts).order_by(accounts.c.id)).mappings()]


def test_counts_and_progress(demo) -> None:
    store, result, progress = demo
    assert result.accounts == N == store.count("accounts")
    assert result.contacts == store.count("contacts") and N * 1.2 < result.contacts < N * 3
    assert result.metric_points == store.count("metric_points")
    assert result.events == store.count("events") and result.events > N
    assert result.users == store.count("users") >= 5
    assert progress[0][0] == "users"
    done = [d for phase, d, _ in progress if phase == "accounts"]
    assert done == sorted(done) and done[-1] == N == len(done) * 500
    assert progress[-1] == ("analyze", 1, 1)
    for name, share in SCENARIOS.items():  # drawn at about their share
        assert abs(result.scenarios[name] / N - share) < 0.03, name


def test_every_declared_field_is_filled_as_declared(demo, catalog) -> None:
    store, _, _ = demo
    data = rows(store)
    for f in catalog.account.fields:
        values = [r[f.name] for r in data]
        empty = sum(v is None for v in values)
        if not f.type.nullable:
            assert empty == 0, f.name
        if f.type.values:
            assert {v for v in values if v is not None} <= set(f.type.values), f.name
        nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if f.type.low is not None:
            assert min(nums) >= f.type.low, f.name
        if f.type.high is not None:
            assert max(nums) <= f.type.high, f.name


def test_distributions_are_plausible(demo) -> None:
    store, _, _ = demo
    data = rows(store)
    seg = Counter(r["segment"] for r in data)
    assert 0.55 < seg["smb"] / N < 0.65 and 0.25 < seg["mid_market"] / N < 0.35 and 0.07 < seg["enterprise"] / N < 0.13
    arr = {s: [r["arr"] for r in data if r["segment"] == s] for s in seg}
    assert 3_000 <= min(arr["smb"]) and max(arr["smb"]) <= 40_000
    assert statistics.median(arr["smb"]) < statistics.median(arr["mid_market"]) < statistics.median(arr["enterprise"])
    assert all(1 <= r["seats_active"] <= r["seats_purchased"] for r in data)
    assert all(r["active_users"] <= r["seats_active"] for r in data)
    usage = [r["usage_percent"] for r in data]
    assert 0.05 < sum(u > 0.8 for u in usage) / N < 0.15 and max(usage) < 1.2  # fractions, not points
    health = [r["health_score"] for r in data]
    assert 60 < statistics.mean(health) < 85
    assert all(TODAY < r["renewal_date"] <= TODAY + dt.timedelta(days=366) for r in data)
    assert all(r["onboarded_at"] < TODAY and r["contract_started_at"] < r["onboarded_at"] for r in data)
    never = sum(r["last_expansion_at"] is None for r in data) / N
    assert 0.45 < never < 0.75
    nps = [r["nps"] for r in data if r["nps"] is not None]
    assert 0.1 < 1 - len(nps) / N < 0.25 and 0.1 < sum(v >= 9 for v in nps) / len(nps) < 0.35


def test_history_and_events(demo, catalog) -> None:
    store, _, _ = demo
    mp, ev = schema.MetricPoint.__table__, schema.Event.__table__
    with store.engine.connect() as conn:
        per_metric = dict(conn.execute(sa.select(mp.c.metric, sa.func.count(sa.distinct(mp.c.account_id)))
                                       .group_by(mp.c.metric)).all())
        span = conn.execute(sa.select(sa.func.min(mp.c.date), sa.func.max(mp.c.date))).one()
        per_event = dict(conn.execute(sa.select(ev.c.event, sa.func.count()).group_by(ev.c.event)).all())
        latest = conn.execute(sa.select(sa.func.max(ev.c.occurred_on))).scalar_one()
    assert set(per_metric) == set(catalog.metrics)
    assert sorted(v for k, v in per_metric.items() if "gated" not in k) == [N] * (len(per_metric) - 1)
    assert span == (TODAY - dt.timedelta(days=364), TODAY)  # 12 months, weekly at this size
    assert set(per_event) == set(catalog.events)
    assert latest <= TODAY


def test_each_trigger_fires_on_a_plausible_share(demo, catalog) -> None:
    evaluate = pytest.importorskip("engine.evaluate")
    store, _, _ = demo
    rules = evaluate.RuleSQL(catalog, TODAY, store.dialect)
    with store.engine.connect() as conn:
        shares = {t: len(evaluate.fired(conn, rules, t)) / N for t in catalog.triggers}
    # 5-15% is the aim; narrow windows (a 15-day renewal band and health 80+)
    # land lower, so the floor is 1%.
    off = {t: f"{s:.1%}" for t, s in shares.items() if not 0.01 <= s <= 0.2}
    assert not off, f"triggers outside 1-20% of demo accounts: {off}"


def test_deterministic_and_refuses_to_mix(tmp_path, catalog) -> None:
    with fresh_store("sqlite", tmp_path, catalog) as a, fresh_store("sqlite", tmp_path, catalog) as b:
        generate(catalog, 150, seed=3, today=TODAY, store=a)
        generate(catalog, 150, seed=3, today=TODAY, store=b)
        assert rows(a) == rows(b)
        with pytest.raises(DemoDataError, match="already holds 150 accounts"):
            generate(catalog, 10, seed=3, today=TODAY, store=a)
        generate(catalog, 20, seed=4, today=TODAY, store=a, replace=True)
        assert a.count("accounts") == 20 and rows(a) != rows(b)[:20]


ODD = """\
entity account
  field tier        enum(bronze, silver, gold)
  field segment     enum(startup, corporate)
  field usage_percent number 0..100
  field health_score int
  field renewal_date datetime
  field mystery     text?
  field ratio       percent
  field budget      money?
  field trial_left  duration
  field owner       user
  field champion    contact
  field happy       bool
  field onboarded_at date
metric logins per day
event webinar_attended
"""


def test_any_declaration_is_filled_by_type_and_name(tmp_path) -> None:
    catalog = load_text(ODD).catalog
    with fresh_store("sqlite", tmp_path, catalog) as store:
        generate(catalog, 300, seed=1, today=TODAY, store=store)
        data = rows(store)
        logins = store.count("metric_points")
    assert {r["segment"] for r in data} <= {"startup", "corporate"} and {r["tier"] for r in data} > {"gold"}
    usage = [r["usage_percent"] for r in data]
    assert max(usage) <= 100 and sum(u > 1 for u in usage) > 250  # points, since declared as a number
    assert all(isinstance(r["health_score"], int) for r in data)
    assert all(isinstance(r["renewal_date"], dt.datetime) and r["renewal_date"].date() > TODAY for r in data)
    assert all(0 <= r["ratio"] <= 1 and r["owner"].startswith("usr-csm-") for r in data)
    assert all(r["champion"].startswith("con-") for r in data)
    assert 0 < sum(r["mystery"] is None for r in data) < 100
    assert logins == 300 * 53


def test_history_schedule() -> None:
    assert default_history(1_000).days_ago(0)[:3] == [0, 7, 14] and len(default_history(1_000).days_ago(0)) == 53
    mid = default_history(100_000)
    assert mid.days_ago(5) == list(range(0, 91, 7)) + list(range(114, 366, 30))
    big = default_history(1_000_000)
    assert big.days_ago(10) == list(range(0, 91, 14)) + list(range(114, 366, 30))
    assert big.days_ago(60_000) == list(range(0, 91, 14))
    assert History(older_accounts=0).days_ago(0) == list(range(0, 91, 7))


def _indexes(store: Store) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            return sorted(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'").all())
        return sorted(conn.exec_driver_sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()").all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_indexes_built_after_the_load_are_the_migrated_ones(backend, tmp_path, catalog) -> None:
    with fresh_store(backend, tmp_path, catalog) as store:
        store.sync_entities(catalog)
        before = _indexes(store)
        generate(catalog, 300, seed=7, today=TODAY, store=store, chunk_size=100)
        assert _indexes(store) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_generation_leaves_the_indexes_in_place(backend, tmp_path, catalog, monkeypatch) -> None:
    from engine import demo_data

    calls = []

    def failing(self, p):
        calls.append(p.index)
        if len(calls) > 150:
            raise RuntimeError("boom")
        return []

    with fresh_store(backend, tmp_path, catalog) as store:
        store.sync_entities(catalog)
        before = _indexes(store)
        monkeypatch.setattr(demo_data._Generator, "event_rows", failing)
        with pytest.raises(RuntimeError, match="boom"):
            generate(catalog, 300, seed=7, today=TODAY, store=store, chunk_size=100)
        assert _indexes(store) == before
        assert store.count("accounts") == 100  # the chunk written before the failure stays
