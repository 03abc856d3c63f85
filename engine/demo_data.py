"""A realistic synthetic data set for demos and benchmarks: `playbook demo-data --accounts N`.

    project = dsl.project.load(["playbooks"])
    store = Store.open(catalog=project.catalog)
    result = generate(project.catalog, 100_000, seed=7, today=date(2026, 6, 1), store=store,
                      progress=lambda phase, done, total: ...)

It works off whatever the `entity account` declaration says: every declared
field gets a value, from a table of known names (segment, arr, seats,
health_score, renewal_date, ...) when the name is known, else from the
declared type (and range). Known values are made in their natural unit and
converted to the declared type, so `usage_percent` may be declared
`percent` (0.85) or `number 0..100` (85).

Realism comes from two things (docs/store.md lists the shares):
* a latent "quality" per account that moves health, activation, NPS,
  adoption and the ticket trend together, so gates pass on a plausible
  minority instead of on an independent-coin-flip sliver;
* scenarios, each drawn for a share of accounts (usage ceiling, seat
  crunch, hiring, funding, power users, gated-feature exploration, feature
  request, cross-sell fit, promoter, QBR need, at risk, new customer,
  renewal soon), which set the fields, metric trends and events the seed
  triggers look at, so each trigger fires on roughly 5-15% of accounts.

Volume and speed: rows are generated in chunks of accounts and written with
executemany (raw DBAPI on SQLite, Core multi-row inserts on PostgreSQL),
never as ORM objects, one transaction per chunk, so memory is bounded by
the chunk. Metric history is sampled, not daily (see `History`).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import random
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby, repeat
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import nodes as n
from dsl.catalog import Catalog
from engine import history as field_history
from engine import indexes, rollups, schema
from engine.settings import load_settings
from engine.store import Store

# (phase, done, total): "users", "accounts", "analyze". `done` counts accounts for "accounts".
ProgressFn = Callable[[str, int, int], None]


class DemoDataError(Exception):
    """The demo data cannot be generated as asked (e.g. the store already holds accounts)."""


# --------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class History:
    """Which days get a metric point (each point is the metric's value that day).

    Daily points for a million accounts and five metrics would be 1.8
    billion rows. Windows in rules are at most ~90 days, so the recent
    past is dense and the rest of the year is monthly:
    * every `recent_step` days over the last `recent_days` (weekly: 13 points,
      enough for growth over 60/90 days and averages over 30 days);
    * every `older_step` days from there back to `span_days` (the 12 months),
      for the first `older_accounts` accounts only (None: all of them).
    """

    recent_days: int = 91
    recent_step: int = 7
    older_step: int = 30
    span_days: int = 365
    older_accounts: int | None = None

    def days_ago(self, account_index: int) -> list[int]:
        days = list(range(0, self.recent_days, self.recent_step))
        if self.older_accounts is None or account_index < self.older_accounts:
            start = days[-1] + self.older_step if days else 0
            days += list(range(start, self.span_days + 1, self.older_step))
        return days


def default_history(n_accounts: int) -> History:
    """Weekly for the whole year up to 20k accounts; up to 200k, weekly for 90
    days and monthly before; above, every 14 days for 90 days (7 points: still
    3 in any 30-day window, 5 in 60 days) and the older monthly points only for
    the first 50k accounts."""
    if n_accounts <= 20_000:
        return History(recent_days=366, recent_step=7)
    if n_accounts <= 200_000:
        return History()
    return History(recent_step=14, older_accounts=50_000)


# Share of accounts in each scenario (drawn independently).
SCENARIOS: dict[str, float] = {
    "usage_ceiling": 0.10,    # usage over 80% of the plan limit
    "seat_crunch": 0.10,      # over 90% of purchased seats active
    "hiring": 0.07,           # headcount +20-50% in 90 days, hiring spike events
    "funding": 0.06,          # funding announced in the last 30 days
    "power_users": 0.07,      # engagement 2-3x the segment's average
    "gated_explorer": 0.07,   # 3+ gated features explored in the last 14 days
    "feature_request": 0.06,  # asked for a higher-tier feature in the last 3 days
    "cross_sell_fit": 0.07,   # strong whitespace fit, cross-sell interest
    "promoter": 0.06,         # NPS 9-10 answered in the last 7 days, adjacent need on file
    "qbr_need": 0.06,         # QBR in the last 7 days logged an unmet need on the roadmap
    "at_risk": 0.08,          # low health, rising tickets, falling usage
    "new_customer": 0.07,     # onboarded in the last 90 days
    "renewal_soon": 0.04,     # renewal 45-95 days out (on top of the uniform spread)
    "api_surge": 0.06,        # API calls up 60%+ in 60 days
}

SEGMENTS = (("smb", 0.60), ("mid_market", 0.30), ("enterprise", 0.10))
# ARR: median and (low, high) clip, per segment.
ARR = {"smb": (12_000, 3_000, 40_000), "mid_market": (60_000, 30_000, 200_000),
       "enterprise": (300_000, 150_000, 2_000_000)}
SEAT_PRICE = {"smb": 400, "mid_market": 500, "enterprise": 650}
HEADCOUNT = {"smb": (20, 200), "mid_market": (200, 2_000), "enterprise": (2_000, 50_000)}
COHORT_MINUTES = {"smb": 35.0, "mid_market": 45.0, "enterprise": 55.0}
PLANS = {"smb": ("Starter", "Growth"), "mid_market": ("Growth", "Scale"), "enterprise": ("Scale", "Enterprise")}
NEXT_PLAN = {"Starter": "Growth", "Growth": "Scale", "Scale": "Enterprise", "Enterprise": "Enterprise Plus"}
CORE_FEATURES = 12
CONTACTS_PER_SEGMENT = {"smb": (1, 2), "mid_market": (2, 3), "enterprise": (3, 4)}


@dataclass
class DemoResult:
    accounts: int = 0
    contacts: int = 0
    users: int = 0
    metric_points: int = 0
    events: int = 0
    seconds: float = 0.0
    scenarios: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.accounts + self.contacts + self.users + self.metric_points + self.events

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------
# Names

_SYLLABLES = ("ac", "al", "ar", "be", "bri", "ca", "co", "da", "del", "el", "fa", "fi", "ga", "in", "ka", "lu",
              "ma", "mo", "na", "no", "or", "pa", "qu", "ra", "ri", "sa", "so", "ta", "te", "tri", "va", "ve",
              "xo", "ze")
_SUFFIXES = ("Labs", "Systems", "Analytics", "Health", "Logistics", "Software", "Group", "Works", "Cloud",
             "Robotics", "Bank", "Media", "Energy", "Foods", "Studio", "Networks")
_FIRST = ("Ava", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Hugo", "Isla", "Jack", "Keira", "Liam",
          "Maya", "Noah", "Olivia", "Priya", "Quinn", "Ravi", "Sofia", "Tom", "Uma", "Victor", "Wen", "Yara", "Zoe",
          "Aisha", "Carlos", "Diego", "Elena", "Hana", "Ivan", "Kenji", "Lena", "Marco", "Nadia", "Omar")
_LAST = ("Smith", "Garcia", "Chen", "Patel", "Müller", "Rossi", "Kim", "Nguyen", "Johnson", "Okafor", "Silva",
         "Cohen", "Novak", "Larsen", "Dubois", "Tanaka", "Haddad", "Kowalski", "Brown", "Lopez", "Singh", "Ivanova")
_TITLES = ("Head of Operations", "VP Engineering", "IT Director", "Product Manager", "CTO", "Operations Lead",
           "Platform Admin", "Director of Analytics", "COO", "Engineering Manager")
_ZONES = (("America/New_York", 0.30), ("America/Chicago", 0.15), ("America/Los_Angeles", 0.20),
          ("Europe/London", 0.12), ("Europe/Berlin", 0.10), ("Asia/Singapore", 0.05), ("Australia/Sydney", 0.04),
          ("Asia/Tokyo", 0.04))
_FEATURES = ("Audit log", "SSO", "Advanced roles", "Data residency", "Sandbox environments", "Custom reports",
             "API rate boost", "Workflow automation")
_CROSS_SELL = (("Analytics Cloud", "they rebuild the same usage reports by hand every month",
                "scheduled, shareable dashboards over the same data"),
               ("Security Suite", "their auditors ask for access reviews every quarter",
                "automated access reviews with an audit trail"),
               ("Integrations Hub", "two teams copy data between tools each week",
                "managed sync between the tools they already use"))
_LIMITS = (("API calls", 0.6), ("seats", 0.2), ("storage", 0.2))
_FUNDING = ("Seed", "Series A", "Series B", "Series C", "Growth")


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    r = rng.random() * sum(w for _, w in weighted)
    for value, w in weighted:
        r -= w
        if r <= 0:
            return value
    return weighted[-1][0]


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _company(rng: random.Random) -> str:
    word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    return f"{word} {rng.choice(_SUFFIXES)}"


# --------------------------------------------------------------------------
# One account, in natural units


@dataclass
class Profile:
    """What the generator knows about an account before it fits the declaration."""

    index: int
    id: str
    company: str
    domain: str
    segment: str
    quality: float  # 0..1, latent: moves health, activation, NPS, adoption together
    scenarios: set[str]
    values: dict[str, Any]  # known field name -> value in its natural unit
    headcount: int
    api_base: float
    contact_ids: list[str]


# Known fields whose natural value is a fraction (0.85 = 85%): when a field of
# that name is declared as a plain number, it holds percentage points.
_UNKNOWN = object()
FRACTIONS = {"usage_percent", "feature_adoption", "seat_utilization", "user_activation"}


class _Generator:
    def __init__(self, catalog: Catalog, seed: int, today: dt.date, n_accounts: int, history: History) -> None:
        self.catalog = catalog
        self.rng = random.Random(seed)
        self.today = today
        self.n = n_accounts
        self.history = history
        self.width = max(7, len(str(n_accounts)))
        self.account_fields = catalog.account.fields if catalog.account else []
        contact = catalog.entities.get("contact")
        self.contact_fields = [f for f in (contact.fields if contact else []) if f.name not in schema.CORE_COLUMNS["contact"]]
        self.metrics = list(catalog.metrics)
        self.events = list(catalog.events)
        n_csm = int(_clip(math.ceil(n_accounts / 300), 3, 3000))
        n_ae = int(_clip(math.ceil(n_accounts / 800), 2, 1000))
        self.users: list[tuple[str, str, str, str]] = []  # id, email, name, role
        for role, count in (("csm", n_csm), ("ae", n_ae)):
            for i in range(count):
                first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
                uid = f"usr-{role}-{i + 1:04d}"
                self.users.append((uid, f"{first.lower()}.{last.lower()}.{role}{i + 1}@playbook-demo.example",
                                   f"{first} {last}", role))
        self.csms = [u for u in self.users if u[3] == "csm"]
        self.aes = [u for u in self.users if u[3] == "ae"]
        self.event_seq = 0
        self._days_ago_dates = [today - dt.timedelta(days=k) for k in range(400)]
        core = set(schema.CORE_COLUMNS["account"])
        # id and name come from the profile; declared fields follow in declaration order.
        self.account_columns = ["id", "name"] + [f.name for f in self.account_fields if f.name not in core]
        getters: list[Callable[[Profile], Any]] = [lambda p: p.id, lambda p: p.company]
        self._account_getters = getters + [self._getter(f) for f in self.account_fields if f.name not in core]
        self._schedules: dict[int, tuple[tuple[list[int], int, list[Any]], tuple[list[int], int, list[Any]]]] = {}
        # How the writer wants values (set by `use_sqlite_storage`): rows are
        # built in their final form, since converting 50M rows afterwards
        # costs more than making them.
        self.date_value: Callable[[dt.date], Any] = _identity
        self.datetime_value: Callable[[dt.datetime], Any] = _identity
        self.json_value: Callable[[Any], Any] = _identity
        # Metric points' dates: ISO text for SQLite and for COPY (`copy_points`).
        self.point_date: Callable[[dt.date], Any] = _identity

    # -- profile -----------------------------------------------------------

    def profile(self, i: int) -> Profile:
        rng, today = self.rng, self.today
        sc = {name for name, share in SCENARIOS.items() if rng.random() < share}
        segment = _pick(rng, SEGMENTS)
        q = rng.betavariate(3, 2)
        if "at_risk" in sc:
            q = rng.uniform(0.02, 0.3)
        company = _company(rng)
        domain = company.split()[0].lower() + f"{i}.example"
        med, lo, hi = ARR[segment]
        arr = round(_clip(med * math.exp(rng.gauss(0, 0.5)), lo, hi), -2)
        seats_purchased = max(3, round(arr / SEAT_PRICE[segment] * rng.uniform(0.8, 1.2)))
        util = _clip(0.45 + 0.40 * q + rng.gauss(0, 0.05), 0.2, 0.88)
        if "seat_crunch" in sc:
            util = rng.uniform(0.92, 1.0)
        seats_active = max(1, round(seats_purchased * util))
        active_users = max(1, round(seats_active * _clip(0.6 + 0.38 * q + rng.gauss(0, 0.05), 0.2, 1.0)))
        usage = rng.uniform(0.15, 0.78)
        if "usage_ceiling" in sc:
            usage = rng.uniform(0.81, 1.15)
        health = round(_clip(40 + 58 * q + rng.gauss(0, 6), 0, 100))
        if "at_risk" in sc:
            health = rng.randint(12, 45)
        if "new_customer" in sc:
            onboarded = today - dt.timedelta(days=rng.randint(5, 90))
        else:
            onboarded = today - dt.timedelta(days=rng.randint(91, 1800))
        contract_start = onboarded - dt.timedelta(days=rng.randint(7, 30))
        # The next anniversary of the contract: renewals spread over the year.
        renewal = _next_anniversary(contract_start, today)
        if "renewal_soon" in sc:
            renewal = today + dt.timedelta(days=rng.randint(45, 95))
        tenure = (today - contract_start).days
        roll = rng.random()
        if roll < 0.55 or tenure < 120:
            last_expansion = None  # never expanded
        elif roll < 0.65:
            last_expansion = today - dt.timedelta(days=rng.randint(10, 90))
        else:
            last_expansion = today - dt.timedelta(days=rng.randint(91, max(92, tenure - 30)))
        core = int(_clip(round(2 + 9 * q + rng.gauss(0, 1.5)), 0, CORE_FEATURES))
        dep_hi = {"smb": 3, "mid_market": 6, "enterprise": 15}[segment]
        departments = int(_clip(round(1 + (dep_hi - 1) * q + rng.gauss(0, 0.7)), 1, dep_hi))
        nps: int | None = int(_clip(round(3 + 6.3 * q + rng.gauss(0, 1.2)), 0, 10))
        if rng.random() < 0.15:
            nps = None  # never answered
        if "promoter" in sc:
            nps = rng.choice((9, 10))
        if "at_risk" in sc:
            trend = _pick(rng, (("rising", 0.7), ("stable", 0.25), ("declining", 0.05)))
            tickets = rng.randint(5, 15)
            priority = rng.randint(1, 4)
        else:
            trend = _pick(rng, (("declining", 0.1 + 0.5 * q), ("stable", 0.55), ("rising", 0.35 - 0.3 * q)))
            tickets = min(int(rng.expovariate(1 / (2.2 - 1.8 * q))), 8)
            priority = 1 if rng.random() < 0.05 else 0
        cohort = COHORT_MINUTES[segment]
        engagement = cohort * _clip(0.6 + 0.8 * q + rng.gauss(0, 0.15), 0.3, 1.7)
        if "power_users" in sc:
            engagement = cohort * rng.uniform(2.15, 3.0)
        low_plan, high_plan = PLANS[segment]
        plan = low_plan if rng.random() < 0.6 else high_plan
        next_plan = NEXT_PLAN[plan]
        cross = None
        if sc & {"cross_sell_fit", "promoter", "qbr_need"} or rng.random() < 0.12:
            cross = rng.choice(_CROSS_SELL)
        requested = rng.choice(_FEATURES) if "feature_request" in sc or rng.random() < 0.10 else None
        # Explorers try several gated features; the importer names the one to
        # talk about (requested_feature) after the first of them.
        explored = rng.sample(_FEATURES, rng.randint(3, 5)) if "gated_explorer" in sc else []
        if explored and requested is None:
            requested = explored[0]
        fit = rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5))
        adoption_pct = round(_clip(100 * q + rng.gauss(0, 15), 0, 100), 1)
        budget = round(rng.uniform(0, 100), 1)
        champion = round(_clip(100 * q * rng.uniform(0.5, 1.1), 0, 100), 1)
        if "cross_sell_fit" in sc:
            fit = 5 if rng.random() < 0.8 else 4
            adoption_pct = round(rng.uniform(78, 99), 1)
            budget = round(rng.uniform(65, 100), 1)
            champion = round(rng.uniform(65, 100), 1)
        csm = self.csms[i % len(self.csms)]
        ae = self.aes[i % len(self.aes)]
        ncontacts = rng.randint(*CONTACTS_PER_SEGMENT[segment])
        acc_id = f"acc-{i + 1:0{self.width}d}"
        contact_ids = [f"con-{i + 1:0{self.width}d}-{k + 1}" for k in range(ncontacts)]
        hc_lo, hc_hi = HEADCOUNT[segment]
        headcount = int(math.exp(rng.uniform(math.log(hc_lo), math.log(hc_hi))))
        potential = _clip(30 + 50 * (math.log(arr) - math.log(3_000)) / (math.log(2_000_000) - math.log(3_000))
                          + rng.gauss(0, 12), 0, 100)
        days_to_renewal = (renewal - today).days
        timing = _clip(100 - days_to_renewal / 3.65 + rng.gauss(0, 10), 0, 100)
        relationship = _clip(35 + 45 * q + (15 if segment == "enterprise" else 0) + rng.gauss(0, 10), 0, 100)
        limit_type = _pick(rng, _LIMITS)
        days_to_limit = rng.randint(5, 45) if usage >= 0.8 else rng.randint(60, 365)
        values: dict[str, Any] = {
            "company": company, "name": company, "segment": segment, "arr": arr, "mrr": round(arr / 12, 2),
            "csm": csm[0], "csm_name": csm[2], "ae": ae[0], "owner": csm[0], "admin": contact_ids[0],
            "exec_sponsor": rng.random() < {"smb": 0.1, "mid_market": 0.35, "enterprise": 0.6}[segment] + 0.2 * q,
            "plan": plan, "next_plan": next_plan, "next_plan_arr": round(arr * rng.uniform(1.4, 1.8), -2),
            "next_plan_capacity": {"API calls": "250,000 API calls a month", "seats": "50 more seats",
                                   "storage": "1 TB more storage"}[limit_type],
            "team_plan": "Team", "team_features": "shared workspaces, roles & SSO",
            "contract_started_at": contract_start, "onboarded_at": onboarded, "renewal_date": renewal,
            "last_expansion_at": last_expansion, "usage_limit_type": limit_type, "usage_percent": usage,
            "projected_limit_date": today + dt.timedelta(days=days_to_limit),
            "seats_purchased": seats_purchased, "seats_active": seats_active, "seats": seats_purchased,
            "active_users": active_users, "health_score": health, "health": health,
            "feature_adoption": core / CORE_FEATURES, "core_features_adopted": core,
            "departments_active": departments, "nps": nps, "open_tickets": tickets,
            "open_priority_tickets": priority, "ticket_trend": trend,
            "cohort_engagement_minutes": round(cohort, 1),
            "potential_score": round(potential, 1), "timing_score": round(timing, 1),
            "relationship_score": round(relationship, 1),
            "requested_feature": requested,
            "requested_feature_tier": (next_plan if requested else None),
            "qbr_need_on_roadmap": "qbr_need" in sc or rng.random() < 0.05,
            "cross_sell_product": cross[0] if cross else None, "cross_sell_need": cross[1] if cross else None,
            "cross_sell_outcome": cross[2] if cross else None,
            "reference_customer": _company(rng) if cross else None,
            "cross_sell_price": round(arr * rng.uniform(0.2, 0.4), -2) if cross else None,
            "product_fit": fit, "adoption_percentile": adoption_pct, "budget_timing": budget,
            "champion_strength": champion, "employees": headcount, "headcount": headcount,
            "industry": rng.choice(("software", "fintech", "healthcare", "retail", "logistics", "media")),
            "country": rng.choice(("US", "US", "US", "GB", "DE", "FR", "CA", "AU", "SG")),
            "_engagement": engagement, "_explored": explored,
        }
        api_base = max(50.0, seats_active * rng.uniform(30, 90) * (0.5 + usage))
        return Profile(i, acc_id, company, domain, segment, q, sc, values, headcount, api_base, contact_ids)

    # -- rows ----------------------------------------------------------------

    def use_sqlite_storage(self) -> None:
        self.date_value, self.datetime_value = _date_text, _datetime_text
        self.json_value, self.point_date = _JSON, _date_text
        self._schedules.clear()
        self._account_getters = self._account_getters[:2] + [
            self._stored(f, self._getter(f)) for f in self.account_fields if f.name not in schema.CORE_COLUMNS["account"]]

    @staticmethod
    def _stored(f: n.FieldDecl, get: Callable[[Profile], Any]) -> Callable[[Profile], Any]:
        """`get` with its value in SQLite's storage form (as SQLAlchemy's types would store it)."""
        stores: dict[n.TypeName, Callable[[Any], str | int]] = {
            n.TypeName.DATE: _date_text, n.TypeName.DATETIME: _datetime_text, n.TypeName.BOOL: int}
        store = stores.get(f.type.name)
        if store is None:
            return get
        return lambda p: None if (v := get(p)) is None else store(v)

    def account_row(self, p: Profile) -> list[Any]:
        """The account's values in `account_columns` order."""
        return [get(p) for get in self._account_getters]

    def _getter(self, f: n.FieldDecl) -> Callable[[Profile], Any]:
        """How to fill one declared field, decided once per field (this runs a million times)."""
        name, nullable, rng = f.name, f.type.nullable, self.rng
        conv = _coercer(f, rng, self.today, fraction=name in FRACTIONS)
        by_type = self._by_type

        def get(p: Profile) -> Any:
            v = p.values.get(name, _UNKNOWN)
            if v is _UNKNOWN:  # no story for this name: by type, 10% empty if optional
                return None if nullable and rng.random() < 0.1 else by_type(f, p)
            if v is None:
                return None if nullable else by_type(f, p)
            return conv(v)
        return get

    def _by_type(self, f: n.FieldDecl, p: Profile) -> Any:
        """A value for a field the generator has no story for: by type, name and range."""
        rng, t, name = self.rng, f.type, f.name
        T = n.TypeName
        if t.name in (T.NUMBER, T.INT):
            if t.low is not None and t.high is not None:
                v = rng.uniform(t.low, t.high)
            elif "score" in name:
                v = _clip(40 + 55 * p.quality + rng.gauss(0, 8), 0, 100)
            else:
                v = rng.lognormvariate(3, 1)
            return round(v) if t.name is T.INT else round(v, 2)
        if t.name is T.PERCENT:
            return round(_clip(0.2 + 0.6 * p.quality + rng.gauss(0, 0.1), 0, 1), 4)
        if t.name is T.MONEY:
            return round(p.values["arr"] * rng.uniform(0.05, 0.5), -1)
        if t.name is T.BOOL:
            return rng.random() < 0.25
        if t.name is T.ENUM:
            return rng.choice(t.values) if t.values else None
        if t.name in (T.DATE, T.DATETIME):
            future = any(w in name for w in ("renewal", "due", "next", "expires", "end"))
            days = rng.randint(1, 365)
            d = self.today + dt.timedelta(days=days) if future else self.today - dt.timedelta(days=days)
            return _coerce(d, f, rng, self.today)
        if t.name is T.DURATION:
            return float(rng.randint(1, 60))
        if t.name is T.USER:
            return p.values["csm"]
        if t.name is T.CONTACT:
            return p.contact_ids[0]
        return f"{name.replace('_', ' ')} {rng.randint(1, 20)}"

    @property
    def contact_columns(self) -> list[str]:
        return ["id", "account_id", "email", "name", "first_name", "timezone", "unsubscribed_at"] + [
            f.name for f in self.contact_fields]

    def contact_rows(self, p: Profile) -> list[list[Any]]:
        rows = []
        zone = _pick(self.rng, _ZONES)
        for k, cid in enumerate(p.contact_ids):
            first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
            unsubscribed = (self.datetime_value(_at(self.today - dt.timedelta(days=self.rng.randint(1, 300)), self.rng))
                            if k > 0 and self.rng.random() < 0.02 else None)
            row: list[Any] = [
                cid, p.id, f"{first.lower()}.{last.lower()}@{p.domain}".replace("ü", "ue"), f"{first} {last}", first,
                zone if k == 0 or self.rng.random() < 0.8 else _pick(self.rng, _ZONES), unsubscribed,
            ]
            for f in self.contact_fields:
                if f.name == "title":
                    row.append(self.rng.choice(_TITLES) if k == 0 or self.rng.random() < 0.9 else None)
                elif f.type.nullable and self.rng.random() < 0.2:
                    row.append(None)
                else:
                    v = self._by_type(f, p)
                    row.append(self._stored(f, lambda _p: v)(p) if self.date_value is _date_text else v)
            rows.append(row)
        return rows

    def metric_rows(self, p: Profile, buckets: dict[str, list[tuple[str, str, Any, float]]]) -> int:
        """Add the account's (metric, account_id, date, value) rows to `buckets[metric]`, dates ascending
        (so a chunk's buckets, concatenated by metric, are in primary-key order); the number added.

        The hot path at a million accounts: per point only the noise draw and
        one multiplication run in Python; the rows are zipped in C.
        """
        rnd = self.rng.random
        full, sparse_schedule = self._schedule(p.index)
        pid = p.id
        added = 0
        for metric in self.metrics:
            base, growth, sparse = self._series_shape(metric, p)
            if base is None:
                continue
            ramps, flat, days = sparse_schedule if sparse else full
            # Flat until 90 days ago, then a straight ramp to today's level, with
            # +-3% of noise; the same operations in the same order as one
            # `base * ramp * noise` per point, so the values do not change.
            scaled = [base * (1 + growth * k / 90) for k in ramps]
            if flat:
                scaled += [base * 1.0] * flat
            values = [v * (0.97 + 0.06 * rnd()) for v in scaled]
            values.reverse()
            buckets.setdefault(metric, []).extend(zip(repeat(metric), repeat(pid), days, values))
            added += len(values)
        return added

    def _schedule(self, index: int) -> tuple[tuple[list[int], int, list[Any]], tuple[list[int], int, list[Any]]]:
        """For all points and for the recent ones (ago <= 30): the ramp steps (90 - days ago) of the
        points under 90 days ago, how many points are older, and every point's date, oldest first."""
        days = self.history.days_ago(index)
        key = len(days)  # two schedules at most: with and without the older points
        cached = self._schedules.get(key)
        if cached is None:
            def shape(agos: list[int]) -> tuple[list[int], int, list[Any]]:
                ramps = [90 - ago for ago in agos if ago < 90]
                return ramps, len(agos) - len(ramps), [self.point_date(self.today - dt.timedelta(days=ago))
                                                        for ago in reversed(agos)]
            cached = self._schedules[key] = (shape(days), shape([ago for ago in days if ago <= 30]))
        return cached

    def _series_shape(self, metric: str, p: Profile) -> tuple[float | None, float, bool]:
        """(level 90 days ago, growth over the last 90 days, only recent points) for one metric."""
        rng, sc = self.rng, p.scenarios
        base_growth = rng.uniform(-0.08, 0.12)
        if "at_risk" in sc:
            base_growth = rng.uniform(-0.5, -0.2)
        name = metric.lower()
        if "head" in name or "employee" in name:
            g = rng.uniform(0.22, 0.5) if "hiring" in sc else rng.uniform(-0.03, 0.12)
            return p.headcount / (1 + g), g, False
        if "gated" in name or "trial" in name or "preview" in name:
            if not sc & {"gated_explorer"} and rng.random() > 0.1:
                return None, 0.0, True  # most accounts never touch gated features
            return rng.uniform(2, 30), rng.uniform(0.5, 2.0), True
        if "engagement" in name:
            return p.values["_engagement"] / (1 + base_growth), base_growth, False
        if "minute" in name or "active" in name:
            level = p.values["active_users"] * p.values["_engagement"]
            return level / (1 + base_growth), base_growth, False
        if "api" in name or "call" in name or "request" in name:
            g = rng.uniform(1.0, 2.0) if "api_surge" in sc else base_growth
            return p.api_base / (1 + g) * (1 + base_growth), g, False
        return rng.lognormvariate(4, 1), base_growth, False

    def event_rows(self, p: Profile) -> list[tuple[Any, ...]]:
        """(key, account_id, event, occurred_at, occurred_on, payload) rows, in the writer's form."""
        out: list[tuple[Any, ...]] = []
        rng, sc = self.rng, p.scenarios
        days_ago_date = self._days_ago_dates

        def add(event: str, days_ago: int, payload: dict[str, Any] | None = None) -> None:
            at = _at(self.today - dt.timedelta(days=days_ago), rng)
            self.event_seq += 1
            out.append((f"id:{event}:demo-{self.event_seq}", p.id, event, self.datetime_value(at),
                        self.date_value(days_ago_date[days_ago]), None if payload is None else self.json_value(payload)))

        for event in self.events:
            name = event.lower()
            if "fund" in name:
                if "funding" in sc:
                    add(event, rng.randint(0, 29), {"round": rng.choice(_FUNDING),
                                                     "amount": rng.choice((5, 12, 25, 40, 80)) * 1_000_000})
                elif rng.random() < 0.08:
                    add(event, rng.randint(45, 365), {"round": rng.choice(_FUNDING)})
            elif "hir" in name or "job" in name:
                if "hiring" in sc:
                    for _ in range(rng.randint(1, 2)):
                        add(event, rng.randint(0, 29), {"open_roles": rng.randint(10, 80)})
                elif rng.random() < 0.06:
                    add(event, rng.randint(45, 365), {"open_roles": rng.randint(5, 30)})
            elif "nps" in name:
                score = p.values.get("nps")
                if score is not None:
                    recent = "promoter" in sc
                    add(event, rng.randint(0, 6) if recent else rng.randint(8, 180), {"score": score})
            elif "request" in name:
                feature = p.values.get("requested_feature")
                if "feature_request" in sc:
                    add(event, rng.randint(0, 2), {"feature": feature, "tier": p.values.get("requested_feature_tier")})
                elif feature:
                    add(event, rng.randint(5, 180), {"feature": feature})
            elif "gated" in name or "explor" in name:
                if "gated_explorer" in sc:
                    for feat in p.values["_explored"]:
                        add(event, rng.randint(0, 13), {"feature": feat})
                elif rng.random() < 0.10:
                    for feat in rng.sample(_FEATURES, rng.randint(1, 2)):
                        add(event, rng.randint(0, 120), {"feature": feat})
            elif "qbr" in name:
                if "qbr_need" in sc:
                    add(event, rng.randint(0, 6))
                elif p.segment != "smb" and rng.random() < 0.7:
                    add(event, rng.randint(8, 95))
            elif "ticket" in name:
                for _ in range(p.values["open_tickets"]):
                    add(event, int(rng.random() * 30), {"priority": "P2" if rng.random() < 0.15 else "P3"})
                for _ in range(rng.randint(0, 2)):
                    add(event, rng.randint(30, 365), {"priority": "P3"})
            elif "cross" in name or "interest" in name:
                if "cross_sell_fit" in sc:
                    for _ in range(rng.randint(2, 4)):
                        add(event, rng.randint(0, 170), {"product": p.values["cross_sell_product"]})
                elif p.values.get("cross_sell_product") and rng.random() < 0.3:
                    add(event, rng.randint(0, 170), {"product": p.values["cross_sell_product"]})
            elif rng.random() < 0.08:
                add(event, rng.randint(0, 89))
        return out


def _next_anniversary(start: dt.date, today: dt.date) -> dt.date:
    year = today.year
    while True:
        try:
            d = start.replace(year=year)
        except ValueError:  # 29 February
            d = dt.date(year, 2, 28)
        if d > today:
            return d
        year += 1


def _at(day: dt.date, rng: random.Random) -> dt.datetime:
    """A business-hours instant (UTC) on `day`."""
    # One random() instead of three randint()s: this runs for every event.
    secs = 8 * 3600 + int(rng.random() * 13 * 3600)
    return dt.datetime(day.year, day.month, day.day, secs // 3600, secs // 60 % 60, secs % 60, tzinfo=dt.timezone.utc)


def _coercer(f: n.FieldDecl, rng: random.Random, today: dt.date, *, fraction: bool = False) -> Callable[[Any], Any]:
    """A function taking a natural value to what the declared type wants (units, rounding, range, enum)."""
    T, t = n.TypeName, f.type
    if t.name in (T.INT, T.NUMBER, T.MONEY, T.PERCENT, T.DURATION):
        # Declared as points (`number 0..100`) while the natural value is a fraction.
        factor = 100.0 if fraction and t.name is not T.PERCENT else 1.0
        lo = -math.inf if t.low is None else t.low
        hi = math.inf if t.high is None else t.high
        if t.name is T.INT:
            return lambda v: int(round(_clip(float(v) * factor, lo, hi)))
        digits = 4 if t.name is T.PERCENT else 2
        return lambda v: round(_clip(float(v) * factor, lo, hi), digits)
    if t.name is T.BOOL:
        return bool
    if t.name is T.ENUM:
        values = list(t.values)
        # A known value the declaration does not list maps to a fixed member
        # (crc32, not hash(): the data must not change between runs).
        return lambda v: v if v in values else (values[zlib.crc32(str(v).encode()) % len(values)] if values else None)
    if t.name is T.DATE:
        return lambda v: v.date() if isinstance(v, dt.datetime) else v if isinstance(v, dt.date) else today
    if t.name is T.DATETIME:
        return lambda v: v if isinstance(v, dt.datetime) else _at(v if isinstance(v, dt.date) else today, rng)
    return str


def _coerce(v: Any, f: n.FieldDecl, rng: random.Random, today: dt.date, *, fraction: bool = False) -> Any:
    return None if v is None else _coercer(f, rng, today, fraction=fraction)(v)


# --------------------------------------------------------------------------
# Writing: executemany per dialect


class _Writer:
    """Inserts rows of one table as fast as the driver allows.

    Rows are sequences in `columns` order (dicts are accepted for small tables).
    """

    def __init__(self, conn: Connection, table: sa.Table, columns: Sequence[str] | None = None) -> None:
        self.table = table
        self.columns = list(columns) if columns is not None else [
            c.name for c in table.columns
            if not (c.primary_key and c.autoincrement is True and isinstance(c.type, (sa.Integer, sa.BigInteger)))]
        self.raw = conn.dialect.name == "sqlite"
        # psycopg2: COPY FROM STDIN, several times the rate of multi-row
        # INSERTs for tens of thousands of rows per chunk.
        self.copy_sql = None
        if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
            ident = conn.dialect.identifier_preparer
            self.copy_sql = (f"COPY {ident.quote(table.name)} "
                             f"({', '.join(ident.quote(c) for c in self.columns)}) FROM STDIN")
        if self.raw:
            # SQLite through the DBAPI: values stored exactly as SQLAlchemy's
            # SQLite types store them (ISO dates, naive UTC datetimes with
            # microseconds, 0/1, JSON text), without its per-value overhead.
            ident = conn.dialect.identifier_preparer
            cols = ", ".join(ident.quote(c) for c in self.columns)
            self.sql = (f"INSERT INTO {ident.quote(table.name)} ({cols}) "
                        f"VALUES ({', '.join('?' for _ in self.columns)})")
            convs = [(i, _sqlite_converter(table.c[c].type)) for i, c in enumerate(self.columns)]
            self.convert = [(i, c) for i, c in convs if c is not None]

    def write(self, conn: Connection, rows: Sequence[Any], *, converted: bool = False, points: bool = False) -> None:
        """Insert `rows` (`converted`: already in SQLite's storage form; `points`: metric points
        from `metric_rows`, dates already ISO text, ids and metric names plain)."""
        if not rows:
            return
        if isinstance(rows[0], dict):
            rows = [[r.get(c) for c in self.columns] for r in rows]
        if self.copy_sql is not None:
            buf = io.StringIO()
            if points:
                # (metric, account id, ISO date, float): nothing to escape or dispatch on.
                buf.write("".join([f"{m}\t{a}\t{d}\t{v!r}\n" for m, a, d, v in rows]))
            else:
                buf.writelines("\t".join(map(_copy_text, r)) + "\n" for r in rows)
            buf.seek(0)
            cursor = conn.connection.cursor()
            try:
                cursor.copy_expert(self.copy_sql, buf)
            finally:
                cursor.close()
            return
        if not self.raw:
            conn.execute(self.table.insert(), [dict(zip(self.columns, r)) for r in rows])
            return
        if self.convert and not converted:
            out = []
            for r in rows:
                r = list(r)
                for i, conv in self.convert:
                    v = r[i]
                    if v is not None:
                        r[i] = conv(v)
                out.append(r)
            rows = out
        # The DBAPI cursor of this connection (same transaction): SQLAlchemy's
        # exec_driver_sql would copy every row into a tuple first.
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(self.sql, rows)
        finally:
            cursor.close()


def _series_rows(bucket: list[Any]) -> list[list[Any]]:
    """The rollup's rows (engine/rollups.py) of one metric's points: (metric, account id, date,
    value) rows, each account's together, dates ascending."""
    days: dict[Any, int] = {}  # a chunk holds few distinct dates

    def day_number(d: Any) -> int:
        n = days.get(d)
        if n is None:
            n = days[d] = ((d if isinstance(d, dt.date) else dt.date.fromisoformat(d)) - rollups.EPOCH).days
        return n

    rows = []
    for (metric, account_id), points in groupby(bucket, key=itemgetter(0, 1)):
        rows.append(rollups.row(metric, account_id, [(r[2], r[3]) for r in points], day_number))
    return rows


_DATE_TEXT: dict[dt.date, str] = {}


# One encoder: json.dumps with options builds a new encoder on every call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(v: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if v is None:
        return "\\N"
    if v is True or v is False:
        return "t" if v else "f"
    if isinstance(v, str):
        return v.translate(_COPY_ESCAPES)
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    return str(v)  # numbers: repr-exact for floats


def _identity(v: Any) -> Any:
    return v


def _date_text(d: dt.date) -> str:
    s = _DATE_TEXT.get(d)
    if s is None:
        s = _DATE_TEXT[d] = d.isoformat()
    return s


def _datetime_text(v: dt.datetime) -> str:
    if v.tzinfo is not None:
        v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return v.isoformat(sep=" ", timespec="microseconds")


def _sqlite_converter(t: sa.types.TypeEngine[Any]) -> Callable[[Any], Any] | None:
    if isinstance(t, (schema.UTCDateTime, sa.DateTime)):
        return _datetime_text
    if isinstance(t, sa.Date):
        return _date_text
    if isinstance(t, sa.Boolean):
        return lambda v: int(bool(v))
    if isinstance(t, sa.JSON) or isinstance(getattr(t, "impl", None), sa.JSON):
        return lambda v: json.dumps(v, separators=(",", ":"))
    return None


# --------------------------------------------------------------------------
# Entry point

# Tables the demo fills, children first (the order to empty them in).
# The incremental sweep's marks go with the data they describe (engine/changes.py).
_DATA_TABLES = ("sweep_marks", "sweep_rechecks", "account_changes", "account_field_history", "enrollment_decisions",
                "outcomes", "sla_breaches", "stage_history", "opportunities", "tasks", "enrollments", "events", "metric_series", "metric_points", "contacts", "accounts", "users")


def generate(catalog: Catalog, n_accounts: int, seed: int = 7, today: dt.date | None = None, *,
             store: Store, replace: bool = False, chunk_size: int = 2_000, history: History | None = None,
             progress: ProgressFn | None = None) -> DemoResult:
    """Write `n_accounts` synthetic accounts (with contacts, users, metric history and events) to `store`.

    Deterministic for a given (catalog, n_accounts, seed, today). Refuses a
    store that already has accounts unless `replace`, which first empties the
    account data and everything that refers to it (enrollments, tasks,
    pipeline, decisions; the outbox and audit log are kept).
    `progress(phase, done, total)` is called after each chunk.
    """
    if n_accounts < 0:
        raise DemoDataError("the number of accounts cannot be negative")
    if catalog.account is None:
        raise DemoDataError("no `entity account` is declared: the demo data follows its fields")
    today = today or load_settings().today()  # the team's date, as every command evaluates
    history = history or default_history(n_accounts)
    store.sync_entities(catalog)
    accounts = store.table("account", catalog)
    contacts = store.table("contact", catalog)
    started = time.perf_counter()
    result = DemoResult()
    gen = _Generator(catalog, seed, today, n_accounts, history)
    if store.dialect == "sqlite":
        gen.use_sqlite_storage()  # rows go to the DBAPI as they are
    raw = store.dialect == "sqlite"
    if store.engine.dialect.driver == "psycopg2":
        gen.json_value, gen.point_date = _JSON, _date_text  # COPY takes JSON and dates as text
    report = progress or (lambda phase, done, total: None)

    with store.begin() as conn:
        existing = conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one()
        if existing and not replace:
            raise DemoDataError(f"the store already holds {existing} accounts; use replace=True to start over")
        if replace:
            for name in _DATA_TABLES:
                conn.execute(schema.Base.metadata.tables[name].delete())
        users = schema.User.__table__
        _Writer(conn, users).write(conn, [dict(zip(("id", "email", "name", "role"), u)) for u in gen.users])
        store.audit(conn, "demo-data", "demo.generate", None,
                    {"accounts": n_accounts, "seed": seed, "today": today.isoformat()})
    result.users = len(gen.users)
    report("users", result.users, result.users)

    # Known since the start of the metric history: a backtest over the past year
    # replays the demo with today's values (the demo has no earlier ones).
    known = dt.datetime.combine(today - dt.timedelta(days=history.span_days), dt.time(), dt.timezone.utc)
    known_since: Any = _datetime_text(known) if raw else known
    scenario_counts: dict[str, int] = {name: 0 for name in SCENARIOS}

    def write(acc_rows: list[list[Any]], con_rows: list[list[Any]], buckets: dict[str, list[Any]],
              ev_rows: list[tuple[Any, ...]]) -> None:
        with store.begin() as conn:
            _Writer(conn, accounts, gen.account_columns).write(conn, acc_rows, converted=raw)
            # Each account known since `known`, as an import would record it
            # (engine/history.py): `account_as_of` then reads demo accounts too.
            _Writer(conn, field_history.HISTORY, ["account_id", "field", "valid_from"]).write(
                conn, [[r[0], field_history.KNOWN, known_since] for r in acc_rows], converted=raw)
            _Writer(conn, contacts, gen.contact_columns).write(conn, con_rows, converted=raw)
            # In primary-key order: appends at one place per metric instead of
            # page splits all over the b-tree (about 2x faster on SQLite).
            points = _Writer(conn, schema.MetricPoint.__table__)
            series = _Writer(conn, schema.MetricSeries.__table__)
            for metric in sorted(buckets):
                bucket = buckets[metric]
                points.write(conn, bucket, converted=raw, points=gen.point_date is _date_text)
                series.write(conn, _series_rows(bucket), converted=raw)
            _Writer(conn, schema.Event.__table__).write(conn, ev_rows, converted=raw)

    # Not in a second thread: sqlite3 and psycopg2 take the GIL back for
    # every row (or COPY block), so a writer thread waits on the generating
    # one and the load gets slower, not faster (measured).
    with _indexes_deferred(store, _DEFERRED_INDEXES):
        for start in range(0, n_accounts, chunk_size):
            stop = min(n_accounts, start + chunk_size)
            acc_rows: list[list[Any]] = []
            con_rows: list[list[Any]] = []
            ev_rows: list[tuple[Any, ...]] = []
            buckets: dict[str, list[Any]] = {}
            n_points = 0
            for i in range(start, stop):
                p = gen.profile(i)
                for s in p.scenarios:
                    scenario_counts[s] += 1
                acc_rows.append(gen.account_row(p))
                con_rows += gen.contact_rows(p)
                n_points += gen.metric_rows(p, buckets)
                ev_rows += gen.event_rows(p)
            write(acc_rows, con_rows, buckets, ev_rows)
            result.accounts += len(acc_rows)
            result.contacts += len(con_rows)
            result.metric_points += n_points
            result.events += len(ev_rows)
            report("accounts", stop, n_accounts)

    report("analyze", 0, 1)
    _analyze(store)
    report("analyze", 1, 1)
    result.scenarios = scenario_counts
    result.seconds = time.perf_counter() - started
    return result


# Tables whose secondary indexes are built after the load, when they start empty.
_DEFERRED_INDEXES = ("metric_points", "events", "contacts")


@contextmanager
def _indexes_deferred(store: Store, tables: Sequence[str]) -> Iterator[None]:
    """Drop the non-unique secondary indexes of `tables` that are empty, and create them again at the end.

    Why: a million accounts write 30M metric points; keeping a second
    b-tree ordered row by row costs more than one sort when the index is
    built (CREATE INDEX sorts). The definitions are read back from the
    database (sqlite_master, pg_get_indexdef), so the indexes come back
    exactly as they were, also when the generation fails (engine/indexes.py).
    """
    with store.begin() as conn:
        empty = [t for t in tables
                 if conn.exec_driver_sql(f"SELECT 1 FROM {conn.dialect.identifier_preparer.quote(t)} LIMIT 1").first()
                 is None]
        defs = indexes.secondary(conn, empty)
        indexes.drop(conn, defs)
    try:
        yield
    finally:
        if defs:
            with store.begin() as conn:
                indexes.create(conn, defs)


def _analyze(store: Store) -> None:
    """Fresh planner statistics, so the first rule evaluation picks the right indexes."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # A sampled ANALYZE: exact statistics over tens of millions of
            # metric points would take longer than generating them.
            conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            conn.exec_driver_sql("ANALYZE")
        else:
            # This store's tables only: a bare ANALYZE takes every table of the database in
            # turn, other stores' schemas too, and deadlocked with a parallel test's CREATE INDEX.
            quote = conn.dialect.identifier_preparer.quote
            conn.exec_driver_sql("ANALYZE " + ", ".join(quote(t) for t in schema.Base.metadata.tables))
        conn.commit()


def is_generated(store: Store) -> bool:
    """Empty, or filled by `generate` (its audit entry): a store the demo may clear."""
    audit = schema.AuditEntry.__table__
    with store.connect() as conn:
        if not conn.execute(sa.select(sa.func.count()).select_from(schema.Base.metadata.tables["accounts"]))\
                .scalar_one():
            return True
        return bool(conn.execute(sa.select(sa.func.count()).select_from(audit)
                                 .where(audit.c.action == "demo.generate")).scalar_one())


def clear(store: Store) -> None:
    """Empty the account data and everything plays wrote, the outbox and audit log included
    (the demo starts over; `generate(replace=True)` keeps those two)."""
    with store.begin() as conn:
        for name in ("outbox", "audit_log", *_DATA_TABLES):
            conn.execute(schema.Base.metadata.tables[name].delete())


__all__ = ["DemoDataError", "DemoResult", "History", "ProgressFn", "SCENARIOS", "clear", "default_history",
           "generate", "is_generated"]
