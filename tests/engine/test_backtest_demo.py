"""A backtest of the shipped playbooks over the demo data's past finds fires (the demo's
accounts are known since the start of their metric history, engine/demo_data.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from dsl.project import load
from engine.backtest import backtest
from engine.demo_data import generate
from store_backends import BACKENDS, fresh_store

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
TODAY = dt.date(2026, 6, 1)


@pytest.mark.parametrize("kind", BACKENDS)
def test_the_last_90_days_of_the_demo_fire_triggers(kind: str, tmp_path: Path) -> None:
    catalog = load([PLAYBOOKS]).catalog
    with fresh_store(kind, tmp_path, catalog) as store:
        generate(catalog, 300, seed=7, today=TODAY, store=store)
        with store.engine.connect() as conn:
            r = backtest(conn, catalog, list(catalog.triggers), TODAY - dt.timedelta(days=90),
                         TODAY - dt.timedelta(days=1), today=TODAY)
    assert r.known_since is not None and r.known_since <= TODAY - dt.timedelta(days=90)
    fired = {t.trigger: t.accounts for t in r.results}
    assert sum(fired.values()) > 0
    # Triggers on windows fire on days before yesterday: the demo's series have a past.
    early = {t.trigger for t in r.results if any(d < TODAY - dt.timedelta(days=30) for d in t.first.values())}
    assert early & {"power_user_emergence", "headcount_growth", "usage_ceiling"}
