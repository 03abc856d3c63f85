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
