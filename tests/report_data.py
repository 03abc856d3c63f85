"""Store contents with known report answers, shared by tests/engine/test_reports_*.py and
tests/cli/test_report_commands.py: the seeds' funnel example and a small book of business."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dsl.project import load_text
from engine.schema import Base
from engine.store import Store

T = Base.metadata.tables
UTC = dt.timezone.utc

# The seeds' pipeline example: 1,000 signals, 600 qualified, 400 outreach complete, 250 discovery,
# 150 proposal, 75 won -> 60%, 67%, 63%, 60%, 50%, overall 7.5%.
SEEDS_STAGES = ("Signal Detected", "Qualified", "Outreach Complete", "Discovery Done", "Proposal Sent", "Closed Won")
SEEDS_COUNTS = (1000, 600, 400, 250, 150, 75)
FUNNEL_START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DAYS_PER_STAGE = 2

ENTITY = """\
entity account
  field segment enum(smb, mid_market, enterprise)?
  field arr money?
  field contract_started_at date?
"""
CATALOG = load_text(ENTITY, "account.play").catalog
# Two triggers on ARR, for the trigger report's quarters evaluated from the field history (seed_arr_history).
TRIGGER_RULES = ENTITY + """\
  field csm user?

trigger t_big "Big"
  when account.arr > 100000
  then start p

trigger t_mid "Mid"
  when account.arr >= 12000 and account.arr < 20000
  then start p

play p "A play"
  ungated
  day 1 task account.csm "Call"
"""


def seed_funnel(store: Store) -> None:
    """One opportunity per signal; each moves a stage every DAYS_PER_STAGE days up to the highest it
    reached, and those that did not win are lost DAYS_PER_STAGE days later."""
    tops: list[int] = []
    for i, n in enumerate(SEEDS_COUNTS):
        nxt = SEEDS_COUNTS[i + 1] if i + 1 < len(SEEDS_COUNTS) else 0
        tops += [i] * (n - nxt)
    accounts, opps, history = [], [], []
    for k, top in enumerate(tops):
        acc, opp = f"f{k:04d}", f"opp-{k:04d}"
        created = FUNNEL_START + dt.timedelta(minutes=k)
        won = top == len(SEEDS_STAGES) - 1
        stage = SEEDS_STAGES[top] if won else "Closed Lost"
        accounts.append({"id": acc})
        moves = [SEEDS_STAGES[j] for j in range(top + 1)] + ([] if won else ["Closed Lost"])
        at = [created + dt.timedelta(days=DAYS_PER_STAGE * j) for j in range(len(moves))]
        opps.append({"id": opp, "account_id": acc, "play": "usage_limit" if k % 2 else "team_growth", "stage": stage,
                     "amount": 1000.0, "created_at": created, "updated_at": at[-1], "closed_at": at[-1]})
        history += [{"opportunity_id": opp, "from_stage": moves[j - 1] if j else None, "stage": moves[j], "at": at[j],
                     "actor": "crm"} for j in range(len(moves))]
    with store.begin() as conn:
        conn.execute(T["accounts"].insert(), accounts)
        conn.execute(T["opportunities"].insert(), opps)
        conn.execute(T["stage_history"].insert(), history)


# A small book of business: 4 accounts over two segments, two plays, emails, replies, outcomes
# and sweep decisions, with every report's answer worked out by hand in the tests.
BOOK_DAY = dt.datetime(2026, 2, 2, 9, 0, tzinfo=UTC)


def _at(days: float) -> dt.datetime:
    return BOOK_DAY + dt.timedelta(days=days)


def seed_book(store: Store) -> dict[str, Any]:
    accounts = store.table("account", CATALOG)
    with store.begin() as conn:
        conn.execute(accounts.insert(), [
            {"id": "a1", "segment": "smb", "arr": 10000.0, "contract_started_at": dt.date(2025, 9, 1)},
            {"id": "a2", "segment": "smb", "arr": 20000.0, "contract_started_at": dt.date(2025, 2, 10)},
            {"id": "a3", "segment": "enterprise", "arr": 100000.0, "contract_started_at": dt.date(2025, 7, 1)},
            {"id": "a4", "segment": "enterprise", "arr": 70000.0, "contract_started_at": None},
        ])
        enr = T["enrollments"]
        ids = {}
        for name, account, play, start, end, status in (
                ("e_a1", "a1", "usage_limit", 0, 20, "completed"),
                ("e_a2", "a2", "usage_limit", 1, None, "running"),
                ("e_a3", "a3", "team_growth", 2, 30, "completed"),
                ("e_a4", "a4", "team_growth", 3, None, "running")):
            ids[name] = conn.execute(enr.insert().values(
                workflow_id=f"play:{play}:{account}", play=play, account_id=account, plan_hash="h1", status=status,
                trigger="t", started_at=_at(start), ended_at=None if end is None else _at(end),
            ).returning(enr.c.id)).scalar_one()

        def key(e: str, account: str, play: str, step: str) -> str:
            return f"play:{play}:{account}:h1:e{ids[e]}:{step}"

        emails = [("e_a1", "a1", "usage_limit", "day0-email", 0, "sent"),
                  ("e_a1", "a1", "usage_limit", "day3-email", 3, "sent"),
                  ("e_a2", "a2", "usage_limit", "day0-email", 1, "sent"),
                  ("e_a2", "a2", "usage_limit", "day3-email", 4, "cancelled"),
                  ("e_a3", "a3", "team_growth", "day1-email", 3, "sent"),
                  ("e_a4", "a4", "team_growth", "day1-email", 4, "pending")]
        conn.execute(T["outbox"].insert(), [
            {"idempotency_key": key(e, a, p, s), "channel": "email", "recipient": f"admin@{a}", "subject": s,
             "body": "", "status": st, "account_id": a, "play": p, "created_at": _at(d), "attempts": 0}
            for e, a, p, s, d, st in emails])
        replies = [("a1", "usage_limit", key("e_a1", "a1", "usage_limit", "day3-email"), 4),
                   ("a3", "team_growth", key("e_a3", "a3", "team_growth", "day1-email"), 5),
                   ("a4", "team_growth", None, 6)]  # names no message: the play's last email before it
        conn.execute(T["inbound_events"].insert(), [
            {"key": f"r{i}", "source": "imap", "kind": "replied", "account_id": a, "play": p, "occurred_at": _at(d),
             "received_at": _at(d), "payload": {"message": m} if m else None, "signal_state": "done",
             "signal_attempts": 0} for i, (a, p, m, d) in enumerate(replies)])
        o = T["outcomes"]
        blank = {"play": None, "value": None, "enrollment_id": None, "days_to_close": None}
        conn.execute(o.insert(), [{**blank, **row} for row in [
            {"account_id": "a1", "play": "usage_limit", "outcome": "won", "value": 6000.0,
             "enrollment_id": ids["e_a1"], "at": _at(10), "days_to_close": 10.0, "key": "k1", "source": "csv"},
            {"account_id": "a3", "play": "team_growth", "outcome": "won", "value": 30000.0,
             "enrollment_id": ids["e_a3"], "at": _at(62), "days_to_close": 60.0, "key": "k2", "source": "csv"},
            {"account_id": "a4", "play": "team_growth", "outcome": "lost", "value": None,
             "enrollment_id": ids["e_a4"], "at": _at(12), "days_to_close": 9.0, "key": "k3", "source": "csv"},
            {"account_id": "a2", "play": None, "outcome": "churned", "value": None, "at": _at(40), "key": "k4",
             "source": "csv"},
            {"account_id": "a4", "play": None, "outcome": "contracted", "value": 7000.0, "at": _at(45), "key": "k5",
             "source": "csv"},
        ]])
        d = T["enrollment_decisions"]
        conn.execute(d.insert(), [
            # Q1: t_usage fires on a1 twice (one account) and a2; t_growth on a3 (named second in the list)
            {"account_id": "a1", "play": "usage_limit", "decision": "enrolled", "trigger": "t_usage",
             "reasons": {"triggers": ["t_usage"]}, "at": _at(0)},
            {"account_id": "a1", "play": "usage_limit", "decision": "skipped", "trigger": "t_usage",
             "reasons": {"triggers": ["t_usage"]}, "at": _at(1)},
            {"account_id": "a2", "play": "usage_limit", "decision": "enrolled", "trigger": "t_usage",
             "reasons": {"triggers": ["t_usage"]}, "at": _at(1)},
            {"account_id": "a3", "play": "team_growth", "decision": "enrolled", "trigger": "t_usage",
             "reasons": {"triggers": ["t_usage", "t_growth"]}, "at": _at(2)},
            # Q2 (April): t_growth on a4, recorded without the JSON list (an older sweep)
            {"account_id": "a4", "play": "team_growth", "decision": "skipped", "trigger": "t_growth",
             "reasons": None, "at": dt.datetime(2026, 4, 2, 9, 0, tzinfo=UTC)},
        ])
    return ids


# Holdouts: play `upsell` holds accounts out from HOLD_DAY. Treated: t00..t39 (started the next day) and
# h39 (held out, then enrolled after the share was lowered); t00..t09 won 1,000 x (k + 1) each, t10 lost.
# Held out: h00..h38 (h00 twice); h00..h03 won 2,000 each, h05 won before it was held out (not counted).
# t_pre was enrolled before the holdout began (in no group). Play `nudge`: 5 and 5, not enough data.
HOLD_DAY = dt.datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def seed_holdouts(store: Store) -> None:
    day = dt.timedelta(days=1)
    ids = [f"t{k:02d}" for k in range(40)] + [f"h{k:02d}" for k in range(40)] + ["t_pre"] \
        + [f"n{k}" for k in range(10)]
    enrollments, decisions, outcomes = [], [], []

    def enroll(acc: str, play: str, at: dt.datetime) -> None:
        enrollments.append({"workflow_id": f"play:{play}:{acc}", "play": play, "account_id": acc, "plan_hash": "h",
                            "status": "completed", "started_at": at, "ended_at": at + 20 * day})

    def hold(acc: str, play: str, at: dt.datetime) -> None:
        decisions.append({"account_id": acc, "play": play, "decision": "held_out", "trigger": "busy",
                          "plan_hash": "h", "reasons": {"reasons": [{"code": "held_out", "detail": "x"}]}, "at": at})

    def outcome(acc: str, what: str, value: float, at: dt.datetime) -> None:
        outcomes.append({"account_id": acc, "outcome": what, "value": value, "at": at, "key": f"o:{acc}:{what}",
                         "source": "cli"})

    for k in range(40):
        enroll(f"t{k:02d}", "upsell", HOLD_DAY + day)
        hold(f"h{k:02d}", "upsell", HOLD_DAY)
    hold("h00", "upsell", HOLD_DAY + 7 * day)
    enroll("h39", "upsell", HOLD_DAY + 31 * day)
    enroll("t_pre", "upsell", HOLD_DAY - 28 * day)
    for k in range(10):
        outcome(f"t{k:02d}", "won", 1000.0 * (k + 1), HOLD_DAY + 30 * day)
    outcome("t10", "lost", 5000.0, HOLD_DAY + 30 * day)
    for k in range(4):
        outcome(f"h{k:02d}", "won", 2000.0, HOLD_DAY + 40 * day)
    outcome("h05", "won", 9000.0, HOLD_DAY - 14 * day)
    outcome("t_pre", "won", 7000.0, HOLD_DAY + 10 * day)
    for k in range(5):
        hold(f"n{k}", "nudge", HOLD_DAY + 2 * day)
        enroll(f"n{k + 5}", "nudge", HOLD_DAY + 3 * day)
    with store.begin() as conn:
        conn.execute(T["accounts"].insert(), [{"id": a} for a in ids])
        conn.execute(T["enrollments"].insert(), enrollments)
        conn.execute(T["enrollment_decisions"].insert(), decisions)
        conn.execute(T["outcomes"].insert(), outcomes)


# ARR kept over time (account_field_history, engine/history.py), for the revenue report's
# retention from the values known at a period's start and end. The history begins HISTORY_START
# (every account's "known since" but h5's); Q2 2026 worked out by hand in
# tests/engine/test_reports_revenue.py.
HISTORY_START = dt.datetime(2025, 12, 1, 6, 0, tzinfo=UTC)


def _day(y: int, m: int, d: int) -> dt.datetime:
    return dt.datetime(y, m, d, 6, 0, tzinfo=UTC)


def seed_arr_history(store: Store) -> None:
    accounts = store.table("account", CATALOG)
    h = T["account_field_history"]
    rows = [  # id, segment now, ARR now, known since
        ("h1", "smb", 15000.0, HISTORY_START),  # 10k until 15 May, then 15k: expanded in Q2
        ("h2", "mid_market", 12000.0, HISTORY_START),  # smb until 1 June; 20k until 20 April: contracted
        ("h3", "enterprise", 90000.0, HISTORY_START),  # 100k, 120k from 10 March, 90k from 1 August
        ("h4", "enterprise", 50000.0, HISTORY_START),  # churned 10 June
        ("h5", "smb", 40000.0, _day(2026, 5, 10)),  # a new customer in Q2: not in the base
        ("h6", "enterprise", 30000.0, HISTORY_START),  # churned 1 February, before Q2
        ("h7", "smb", 8000.0, HISTORY_START),  # ARR never updated; won 2k in Q2 (outcome)
    ]
    replaced = [  # id, field, from, to, number, text
        ("h1", "arr", HISTORY_START, _day(2026, 5, 15), 10000.0, None),
        ("h2", "segment", HISTORY_START, _day(2026, 6, 1), None, "smb"),
        ("h2", "arr", HISTORY_START, _day(2026, 4, 20), 20000.0, None),
        ("h3", "arr", HISTORY_START, _day(2026, 3, 10), 100000.0, None),
        ("h3", "arr", _day(2026, 3, 10), _day(2026, 8, 1), 120000.0, None),
    ]
    outcomes = [  # id, outcome, value, at
        ("h4", "won", 5000.0, _day(2025, 11, 15)),  # before the history began: its first known 50k holds it
        ("h4", "churned", None, _day(2026, 6, 10)),
        ("h5", "won", 4000.0, _day(2026, 6, 2)),
        ("h6", "churned", None, _day(2026, 2, 1)),
        ("h7", "won", 2000.0, _day(2026, 5, 5)),
    ]
    with store.begin() as conn:
        conn.execute(accounts.insert(), [{"id": i, "segment": s, "arr": a} for i, s, a, _ in rows])
        conn.execute(h.insert(), [{"account_id": i, "field": "*", "valid_from": k, "valid_to": None,
                                   "value_number": None, "value_text": None} for i, _, _, k in rows]
                     + [{"account_id": i, "field": f, "valid_from": a, "valid_to": b, "value_number": x,
                         "value_text": t} for i, f, a, b, x, t in replaced])
        conn.execute(T["outcomes"].insert(), [
            {"account_id": i, "outcome": o, "value": v, "at": at, "key": f"hist:{i}:{o}", "source": "csv"}
            for i, o, v, at in outcomes])
