"""`playbook stage` and `playbook pipeline` from the command line; `import users=` with managers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli.main import run
from engine import settings as engine_settings
from engine.schema import Base
from engine.store import Store
from peers import free_port

T = Base.metadata.tables
AT = dt.datetime(2026, 6, 5, 10, 0, tzinfo=dt.timezone.utc)  # a Friday


@pytest.fixture()
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    url = f"sqlite:///{tmp_path}/store.db"
    assert run(["demo-data", "--accounts", "3", "--db", url, "--today", "2026-06-01", "--format", "json"]) == 0
    capsys.readouterr()
    store = Store.open(url)
    with store.begin() as conn:
        account = conn.execute(sa.select(T["accounts"].c.id).order_by(T["accounts"].c.id)).scalars().first()
        for opp, stage in (("o1", "Trigger Fired"), ("o2", "Closed Lost")):
            conn.execute(T["opportunities"].insert().values(
                id=opp, account_id=account, title="Upgrade", stage=stage, owner="carol", created_at=AT, updated_at=AT,
                closed_at=AT if stage == "Closed Lost" else None))
            conn.execute(T["stage_history"].insert().values(opportunity_id=opp, stage=stage, at=AT, actor="test"))
    store.close()
    return url


def history(url: str) -> list[tuple[str, str | None, str | None]]:
    store = Store.open(url)
    h = T["stage_history"]
    with store.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.select(h.c.stage, h.c.actor, h.c.reason)
                                               .where(h.c.opportunity_id == "o1").order_by(h.c.id))]
    store.close()
    return rows


def test_stage_records_the_move_with_actor_and_reason_and_says_the_next_sla(db: str,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["stage", "o1", "CSQL Created", "--reason", "validated", "--actor", "carol", "--no-timer",
                "--at", "2026-06-05T15:00:00Z", "--db", db])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[0] == "Moved o1 from Trigger Fired to CSQL Created (reason validated, by carol)."
    assert "SLA: Qualified within 5 business days, due Fri 12 Jun 2026 15:00 UTC" in out
    assert history(db)[-1] == ("CSQL Created", "carol", "validated")


@pytest.mark.parametrize("args, message", [
    (["o1", "Qualifed"], "unknown stage 'Qualifed'; did you mean 'Qualified'?"),
    (["o2", "Negotiation"], "opportunity o2: the opportunity is closed ('Closed Lost')"),
    (["o1", "Trigger Fired"], None),  # already there: not an error
    (["o9", "Qualified"], "opportunity o9: no opportunity 'o9'"),
])
def test_stage_refuses_unknown_stages_and_illegal_moves_with_exit_2(db: str, capsys: pytest.CaptureFixture[str],
                                                                    args: list[str], message: str | None) -> None:
    code = run(["stage", *args, "--reason", "r", "--no-timer", "--db", db])
    captured = capsys.readouterr()
    if message is None:
        assert code == 0 and "already at Trigger Fired: nothing recorded" in captured.out
    else:
        assert code == 2 and message in captured.err
    assert history(db) == [("Trigger Fired", "test", None)]


def test_stage_needs_a_reason_code(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["stage", "o1", "Qualified", "--no-timer", "--db", db]) == 2
    assert run(["stage", "o1", "Qualified", "--reason", "two words", "--no-timer", "--db", db]) == 2
    assert "not a code" in capsys.readouterr().err


def test_stage_with_temporal_unreachable_exits_4_and_writes_nothing(db: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert run(["stage", "o1", "Qualified", "--reason", "r", "--address", address, "--db", db]) == 4
    assert f"cannot reach Temporal at {address}" in capsys.readouterr().err
    assert history(db) == [("Trigger Fired", "test", None)]


def test_pipeline_lists_open_deals_with_age_in_stage_and_sla_status(db: str, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_settings, "clock", lambda: AT + dt.timedelta(hours=50))
    assert run(["pipeline", "--db", db, "--format", "json"]) == 0
    [deal] = json.loads(capsys.readouterr().out)
    assert (deal["opportunity"], deal["stage"], deal["in_stage"]) == ("o1", "Trigger Fired", "2d")
    assert deal["sla"] == "missed 2h ago" and deal["due_at"] == "2026-06-07T10:00:00+00:00"
    assert deal["told"] == ""
    store = Store.open(db)
    with store.begin() as conn:
        conn.execute(T["sla_breaches"].insert(), [
            {"key": f"k{i}", "opportunity_id": "o1", "account_id": deal["account"], "stage": "Trigger Fired",
             "level": level, "owner": "carol", "notified": who, "entered_at": AT, "due_at": AT, "at": AT}
            for i, (level, who) in enumerate((("manager", None), ("owner", "carol")))])
    store.close()
    monkeypatch.setattr(engine_settings, "clock", lambda: AT + dt.timedelta(days=4))
    assert run(["pipeline", "--all", "--db", db, "--format", "json"]) == 0
    deals = {d["opportunity"]: (d["sla"], d["told"]) for d in json.loads(capsys.readouterr().out)}
    assert deals == {"o1": ("missed 2d ago, escalated", "carol (owner), nobody (manager)"), "o2": ("closed", "")}
    assert run(["pipeline", "--db", db]) == 0
    assert "Trigger Fired" in capsys.readouterr().out


def test_users_import_their_manager(tmp_path: Path, db: str) -> None:
    users = tmp_path / "users.csv"
    users.write_text("id,name,manager\ncarol,Carol,maria\nmaria,Maria,\n")
    assert run(["import", f"users={users}", "--db", db, "--format", "json"]) == 0
    store = Store.open(db)
    with store.connect() as conn:
        managers = dict(conn.execute(sa.select(T["users"].c.id, T["users"].c.manager)
                                     .where(T["users"].c.id.in_(["carol", "maria"]))).all())
    store.close()
    assert managers == {"carol": "maria", "maria": None}
