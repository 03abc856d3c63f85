"""TriggerPass: one pass over the accounts finds what each trigger's own query finds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from dsl.project import load
from engine.demo_data import generate
from engine.evaluate import RuleSQL, TriggerPass, fired, without_jit
from store_backends import BACKENDS, fresh_store

TODAY = dt.date(2026, 6, 1)
PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


@pytest.fixture(scope="module")
def catalog():
    return load([PLAYBOOKS]).catalog


@pytest.fixture(scope="module", params=BACKENDS)
def demo(request, tmp_path_factory, catalog):
    with fresh_store(request.param, tmp_path_factory.mktemp("pass"), catalog) as store:
        generate(catalog, 1_500, seed=11, today=TODAY, store=store, chunk_size=500)
        yield store


def found(conn: sa.Connection, tp: TriggerPass) -> dict[str, set[str]]:
    table = sa.Table("t_pass", sa.MetaData(), *tp.columns(), prefixes=["TEMPORARY"])
    table.create(conn)
    try:
        tp.fill(conn, table)
        return {t: {r[0] for r in conn.execute(sa.select(table.c.id).where(table.c[f"t_{k}"]))}
                for k, t in enumerate(tp.triggers)}
    finally:
        table.drop(conn)


@pytest.mark.parametrize("everything_in_the_pass", [False, True])
def test_the_pass_finds_what_each_trigger_query_finds(demo, catalog, everything_in_the_pass: bool) -> None:
    rules = RuleSQL(catalog, TODAY, demo.dialect)
    names = sorted(catalog.triggers)
    tp = TriggerPass(rules, names)
    if everything_in_the_pass:  # the pass is right for any trigger, not only for those it takes
        tp.joined, tp.alone = list(names), []
    with demo.engine.connect() as conn:
        expected = {t: set(fired(conn, rules, t)) for t in names}
        assert found(conn, tp) == expected
    assert all(expected.values())  # every trigger fires somewhere: the comparison says something


def test_the_pass_keeps_to_the_accounts_it_is_given(demo, catalog) -> None:
    accounts = demo.table("account")
    with demo.engine.connect() as conn:
        some = sa.select(accounts.c.id).order_by(accounts.c.id).limit(300)
        ids = {r[0] for r in conn.execute(some)}
        everyone = found(conn, TriggerPass(RuleSQL(catalog, TODAY, demo.dialect), sorted(catalog.triggers)))
        few = found(conn, TriggerPass(RuleSQL(catalog, TODAY, demo.dialect, only=some), sorted(catalog.triggers)))
    assert few == {t: a & ids for t, a in everyone.items()}
    assert any(few.values())


def test_triggers_that_start_from_a_window_keep_their_own_query(catalog) -> None:
    tp = TriggerPass(RuleSQL(catalog, TODAY, "sqlite"), sorted(catalog.triggers))
    assert {"usage_ceiling", "expansion_due", "cross_sell_fit"} <= set(tp.joined)
    # A window's row is required (`happened(...) and ...`), or an `or` of windows becomes a UNION.
    assert {"funding_round", "qbr_outcome", "power_user_emergence", "headcount_growth"} <= set(tp.alone)
    assert sorted(tp.joined + tp.alone) == sorted(catalog.triggers)


def test_a_band_compiles_its_score_once_on_sqlite(catalog) -> None:
    q = RuleSQL(catalog, TODAY, "sqlite").trigger("cross_sell_fit")
    sql = str(q.compile(dialect=sqlite.dialect()))
    # The whitespace score reads product_fit once; its band has three bands of two edges each.
    assert sql.count("accounts.product_fit") == 1


@pytest.mark.parametrize("scoped", [False, True])
def test_a_trigger_over_events_alone_reads_no_accounts_and_finds_what_the_join_finds(demo, catalog, scoped) -> None:
    """`happened(funding_announced, within 30 days)` reads its window's ids without joining
    `accounts` (an event's account is an account: a foreign key); the same accounts as the
    join, which a RuleSQL over a given accounts table keeps, with and without `only`."""
    accounts = demo.table("account")
    only = sa.select(accounts.c.id).order_by(accounts.c.id).limit(700) if scoped else None
    alone = RuleSQL(catalog, TODAY, demo.dialect, only=only)
    joined = RuleSQL(catalog, TODAY, demo.dialect, only=only, accounts=accounts)
    assert [f.name for f in alone.trigger("funding_round").get_final_froms()] == ["w0"]
    assert "FROM accounts JOIN" in str(joined.trigger("funding_round").compile(dialect=demo.engine.dialect))
    with demo.engine.connect() as conn:
        want = fired(conn, joined, "funding_round")
        assert fired(conn, alone, "funding_round") == want
        assert want  # it fires somewhere: the comparison says something
        if only is not None:
            assert set(want) <= {r[0] for r in conn.execute(only)}
        # The hiring branch of headcount_growth's UNION also reads its window alone.
        assert fired(conn, alone, "headcount_growth") == fired(conn, joined, "headcount_growth")


def test_a_condition_reading_an_account_field_or_a_metric_keeps_the_accounts_join(catalog) -> None:
    """Metric points have no foreign key to accounts; a field is read from the account's row."""
    rules = RuleSQL(catalog, TODAY, "postgresql")
    for trigger in ("qbr_outcome", "power_user_emergence", "feature_exploration"):
        assert "FROM accounts" in str(rules.trigger(trigger).compile(dialect=postgresql.dialect())), trigger


def test_the_pass_runs_without_jit_on_postgresql_and_leaves_the_setting_as_it_was(demo, catalog) -> None:
    """`without_jit`: JIT off for the statements inside (their CASE trees cost more to compile
    than to run), then the session's setting again, whatever it was."""
    if demo.dialect != "postgresql":
        with demo.engine.connect() as conn, without_jit(conn):  # nothing to set on SQLite
            return
    with demo.engine.connect() as conn:
        for setting in ("on", "off"):
            conn.execute(sa.text(f"SET jit = {setting}"))
            with without_jit(conn):
                assert conn.execute(sa.text("SHOW jit")).scalar() == "off"
            assert conn.execute(sa.text("SHOW jit")).scalar() == setting
        conn.execute(sa.text("SET jit = on"))
        tp = TriggerPass(RuleSQL(catalog, TODAY, demo.dialect), sorted(catalog.triggers))
        assert any(found(conn, tp).values())
        assert conn.execute(sa.text("SHOW jit")).scalar() == "on"


def test_a_trigger_starting_from_a_metric_window_runs_without_hash_joins_over_every_account_on_postgresql(
        demo, catalog) -> None:
    """`TriggerPass.settings`: `power_user_emergence` merge-joins the rollup with `accounts` in key
    order; every other statement, and the same trigger over a few accounts, keeps the server's plan."""
    every = TriggerPass(RuleSQL(catalog, TODAY, demo.dialect), sorted(catalog.triggers))
    accounts = demo.table("account")
    some = TriggerPass(RuleSQL(catalog, TODAY, demo.dialect, only=sa.select(accounts.c.id).limit(10)),
                       sorted(catalog.triggers))
    assert some.merged == []
    if demo.dialect != "postgresql":
        assert every.merged == []
        return
    assert every.merged == ["power_user_emergence"]
    seen: list[tuple[bool, str]] = []

    def note(conn, cursor, statement, params, context, many) -> None:
        if statement.startswith("INSERT INTO t_pass"):
            with cursor.connection.cursor() as c:
                c.execute("SHOW enable_hashjoin")
                seen.append(("metric_series" in statement and "engagement_minutes" in str(params), c.fetchone()[0]))

    sa.event.listen(demo.engine, "before_cursor_execute", note)
    try:
        with demo.engine.connect() as conn:
            assert any(found(conn, every).values())
            assert conn.execute(sa.text("SHOW enable_hashjoin")).scalar() == "on"
    finally:
        sa.event.remove(demo.engine, "before_cursor_execute", note)
    assert sorted(set(seen)) == [(False, "on"), (True, "off")]
