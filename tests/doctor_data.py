"""A store with known `playbook doctor` answers, shared by tests/engine/test_doctor.py and
tests/cli/test_doctor_commands.py."""

from __future__ import annotations

import datetime as dt

from dsl.project import load_text
from engine.schema import Base
from engine.store import Store

T = Base.metadata.tables
UTC = dt.timezone.utc
TODAY = dt.date(2026, 6, 1)

RULES = """\
entity account
  field segment enum(smb, enterprise)?
  field arr money?
  field health_score number?
  field usage_percent percent?
  field nps number?
  field product_fit number?
  field csm user?
  let promoter = account.nps >= 9

gate ready "Ready"
  when account.segment == smb
    require account.health_score >= 80 "health 80+"
  when account.segment == enterprise
    require account.health_score >= 90 "health 90+"

score whitespace "Cross-sell whitespace"
  = account.product_fit * 20
  band strong   70..100 "Start"
  band possible 50..<70 "Qualify"
  band weak     ..<50   "None"

trigger t_usage "Usage"
  when account.usage_percent > 80%
  then start p

trigger t_promoter "Promoter"
  when account.promoter and account.health_score > 60
  then start p

play p "A play"
  gate ready
  day 1 task account.csm "Call"
"""


def catalog():  # type: ignore[no-untyped-def]
    return load_text(RULES, "doctor.play").catalog


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(9), UTC)


def seed(store: Store) -> None:
    """20 SMB accounts (2 pass the gate: 10%), 10 enterprise (5 pass: 50%); t_usage fired on 15 of 30 (50%),
    t_promoter on none (nps empty on 28 of 30); 4 accounts expanded, 3 of them enrolled first; 2 of the 4
    expanded churned, 1 of the 26 others."""
    cat = catalog()
    accounts = store.table("account", cat)
    rows = []
    for i in range(30):
        smb = i < 20
        passes = (i < 2) if smb else (i < 25)
        rows.append({"id": f"a{i:02}", "segment": "smb" if smb else "enterprise", "arr": 10000.0,
                     "health_score": (95.0 if passes else 70.0), "usage_percent": 0.9 if i % 2 else 0.5,
                     "nps": 10.0 if i < 2 else None, "product_fit": 3.0 if i < 8 else 1.0})
    with store.begin() as conn:
        conn.execute(accounts.insert(), rows)
        d = T["enrollment_decisions"]
        q2 = dt.date(2026, 4, 10)
        conn.execute(d.insert(), [{"account_id": r["id"], "play": "p", "decision": "enrolled" if r["id"] in (
            "a01", "a03", "a05") else "skipped", "trigger": "t_usage", "reasons": {"triggers": ["t_usage"]},
            "at": _at(q2)} for r in rows if r["usage_percent"] == 0.9])
        o = T["outcomes"]
        blank = {"play": None, "value": None, "enrollment_id": None, "days_to_close": None, "source": "csv"}
        won = [("a01", 6000.0), ("a03", 6000.0), ("a05", 6000.0), ("a10", 6000.0)]
        conn.execute(o.insert(), [{**blank, "account_id": a, "outcome": "won", "value": v, "at": _at(dt.date(
            2026, 5, 1)), "key": f"w{a}"} for a, v in won] + [
            {**blank, "account_id": a, "outcome": "churned", "at": _at(dt.date(2026, 5, 20)), "key": f"c{a}"}
            for a in ("a01", "a03", "a20")])


def _day(y: int, m: int, d: int) -> dt.datetime:
    return dt.datetime(y, m, d, 9, tzinfo=UTC)


def seed_pipeline(store: Store) -> None:
    """20 accounts, each enrolled low-touch; four deals; outcomes in 2025-Q4 and 2026-Q1 (today 2026-06-01).

    Trigger to proposal: o1 5 business days, o4 15 -> mean 10.0 (warn: not under 10). CSQL to close: 1 of 4
    (25%, warn: not over 25%). At Qualified: o2 for 18 business days (stalled), o3 for 3. Self-serve: 2 of 20
    low-touch accounts won afterwards (10%, pass). NRR: 100.5% in 2025-Q4 -> 96% in 2026-Q1 while expansion
    ARR rose 1,000 -> 2,000 (fail)."""
    cat = catalog()
    accounts = store.table("account", cat)
    with store.begin() as conn:
        conn.execute(accounts.insert(), [{"id": f"b{i:02}", "segment": "smb", "arr": 10000.0, "health_score": 70.0}
                                         for i in range(20)])
        conn.execute(T["enrollments"].insert(), [
            {"workflow_id": f"play:p:b{i:02}", "play": "p", "account_id": f"b{i:02}", "plan_hash": "h",
             "status": "completed", "route": "low_touch", "started_at": _day(2025, 10, 1)} for i in range(20)])
        deals = {  # id: (account, stages with days)
            "o1": ("b10", [("Trigger Fired", _day(2026, 5, 1)), ("CSQL Created", _day(2026, 5, 4)),
                           ("Qualified", _day(2026, 5, 5)), ("Proposal Sent", _day(2026, 5, 8)),
                           ("Closed Won", _day(2026, 5, 15))]),
            "o2": ("b11", [("Trigger Fired", _day(2026, 5, 1)), ("CSQL Created", _day(2026, 5, 4)),
                           ("Qualified", _day(2026, 5, 6))]),
            "o3": ("b12", [("Trigger Fired", _day(2026, 5, 25)), ("CSQL Created", _day(2026, 5, 26)),
                           ("Qualified", _day(2026, 5, 27))]),
            "o4": ("b13", [("Trigger Fired", _day(2026, 4, 1)), ("CSQL Created", _day(2026, 4, 2)),
                           ("Proposal Sent", _day(2026, 4, 22)), ("Closed Lost", _day(2026, 4, 30))]),
        }
        conn.execute(T["opportunities"].insert(), [
            {"id": k, "account_id": a, "stage": st[-1][0], "created_at": st[0][1], "updated_at": st[-1][1]}
            for k, (a, st) in deals.items()])
        conn.execute(T["stage_history"].insert(), [
            {"opportunity_id": k, "stage": s, "at": at} for k, (_, st) in deals.items() for s, at in st])
        blank = {"play": None, "value": None, "enrollment_id": None, "days_to_close": None, "source": "csv"}
        conn.execute(T["outcomes"].insert(), [
            {**blank, "account_id": "b00", "outcome": "won", "value": 1000.0, "at": _day(2025, 11, 3), "key": "q4"},
            {**blank, "account_id": "b01", "outcome": "won", "value": 2000.0, "at": _day(2026, 2, 3), "key": "q1"},
            {**blank, "account_id": "b02", "outcome": "churned", "at": _day(2026, 3, 3), "key": "q1c"}])
