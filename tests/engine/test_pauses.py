"""engine/pauses.py: the pauses in force, as the sweep reads them."""

from __future__ import annotations

import sqlalchemy as sa

from engine import pauses
from engine.schema import AuditEntry
from engine.store import Store


def test_a_pause_holds_its_play_and_a_pause_of_all_holds_every_play(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        pauses.pause(store, "usage_limit", "ana", "wrong price")
        held = pauses.in_force(store)
        assert pauses.holding(held, "usage_limit").reason == "wrong price"
        assert pauses.holding(held, "team_growth") is None
        pauses.pause(store, pauses.ALL, "bo")
        assert pauses.holding(pauses.in_force(store), "team_growth").by == "bo"


def test_pausing_again_replaces_the_reason_and_resume_all_removes_every_pause_each_audited(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        pauses.pause(store, "usage_limit", "ana", "first")
        pauses.pause(store, "usage_limit", "ana", "second")
        assert pauses.in_force(store)["usage_limit"].reason == "second"
        pauses.pause(store, "team_growth", "ana")
        assert pauses.resume(store, "team_growth", "bo") == ["team_growth"]
        assert pauses.resume(store, pauses.ALL, "bo") == ["usage_limit"]
        assert pauses.in_force(store) == {}
        with store.connect() as conn:
            log = [tuple(r) for r in conn.execute(sa.select(AuditEntry.__table__.c.action, AuditEntry.__table__.c.subject)
                                                  .order_by(AuditEntry.__table__.c.id))]
    assert log == [("play_paused", "usage_limit"), ("play_paused", "usage_limit"), ("play_paused", "team_growth"),
                   ("play_resumed", "team_growth"), ("play_resumed", "usage_limit")]
