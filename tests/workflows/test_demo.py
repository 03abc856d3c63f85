"""`playbook demo` end to end on a small dataset: store, sweep, plays, outbox, summary."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.schema import Base
from engine.store import Store
from workflows.demo import DemoError, run_demo

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
START = dt.datetime(2030, 3, 4, 6, tzinfo=dt.timezone.utc)  # a Monday
ENR, OUT = Base.metadata.tables["enrollments"], Base.metadata.tables["outbox"]


async def test_demo_runs_end_to_end_and_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    s = await run_demo(accounts=60, days=2, db=url, paths=[ROOT / "playbooks"], start=START)
    enrolled = sum(s.enrolled_by_play.values())
    assert s.accounts == 60 and enrolled >= 5 and s.candidates >= enrolled
    assert sum(s.enrolled_by_route.values()) == enrolled
    assert s.triggers_fired and all(n > 0 for n in s.triggers_fired.values())
    assert s.outbox.get("email", 0) >= 5
    e = s.sample_email
    assert e is not None and e.subject and "{{" not in e.body and "{{" not in e.subject
    assert START <= e.created_at < s.end
    with Store.open(url) as store, store.connect() as conn:
        statuses = set(conn.execute(sa.select(ENR.c.status)).scalars())
        assert statuses <= {"completed", "cancelled", "failed"} and "cancelled" in statuses  # nothing left "running"
        assert conn.execute(sa.select(sa.func.count()).select_from(OUT)).scalar_one() == sum(s.outbox.values())
        latest = conn.execute(sa.select(sa.func.max(OUT.c.created_at))).scalar_one()
        assert latest < s.end  # nothing acted after the demo's end

    # Again on the same store: cleared first, same result.
    again = await run_demo(accounts=60, days=2, db=url, paths=[ROOT / "playbooks"], start=START)
    assert again.enrolled_by_route == s.enrolled_by_route and again.outbox == s.outbox
    assert again.sample_email == s.sample_email


async def test_demo_refuses_a_store_with_real_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'real.db'}"
    with Store.open(url) as store, store.begin() as conn:
        conn.execute(Base.metadata.tables["accounts"].insert().values(id="acme", name="Acme"))
    with pytest.raises(DemoError, match="did not make"):
        await run_demo(accounts=10, days=1, db=url, paths=[ROOT / "playbooks"], start=START)


def test_demo_command_json(tmp_path: Path) -> None:
    import contextlib
    import io

    from cli.main import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(["demo", str(ROOT / "playbooks"), "--accounts", "40", "--days", "1", "--format", "json",
                    "--db", f"sqlite:///{tmp_path / 'cli.db'}"])
    assert code == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    assert doc["accounts"] == 40 and doc["days"] == 1 and "enrolled_by_play" in doc and "report" in doc


async def test_the_demo_points_to_the_outbox_and_tasks_commands(tmp_path: Path) -> None:
    import contextlib
    import io

    from cli.main import run
    from workflows.demo import print_summary

    url = f"sqlite:///{tmp_path / 'look.db'}"
    s = await run_demo(accounts=40, days=1, db=url, paths=[ROOT / "playbooks"], start=START)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_summary(s)
    text = out.getvalue()
    assert f"playbook outbox --db {url}" in text and f"playbook tasks --db {url}" in text
    assert "sqlite3" not in text
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run(["outbox", "--db", url, "--format", "json"]) == 0
    assert json.loads(out.getvalue())["total"] == sum(s.outbox.values())
