"""`playbook doctor`: the seeds' setup checks as one report over the stored data.

One table of checks (`CHECKS`): each row names the check, its group, and the
function that judges it. A function returns one `Finding` per subject (a gate
case, a trigger, ...): pass / warn / fail with the numbers behind it and the
seeds' recovery advice, or `no data` naming what is missing — never a made-up
number. Rates come from engine/reports/ (triggers, funnel, revenue) where a
report already computes them.

Statuses from a benchmark with minimum / good / excellent levels (the seeds'
quality table): below the minimum fails, between minimum and good warns, good
or better passes (excellent is said). A band (gate shares 15-60%, fire rates
5-15%) passes inside, fails outside its outer limits, warns between.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict
from sqlalchemy.engine import Connection

from dsl import nodes as n
from dsl import pipeline
from dsl.catalog import Catalog
from dsl.explain import format_expr
from engine.settings import FileBackedSettings, SettingsError, settings_file, table_problems, table_source
from engine.reports.sqltime import num, percent, ratio
from engine.schema import Base, entity_table
from engine.sqlcompile import compiler

T = Base.metadata.tables
OUTCOMES, OPPS, STAGES = T["outcomes"], T["opportunities"], T["stage_history"]
DECISIONS, ENROLLMENTS, EVENTS, METRICS = T["enrollment_decisions"], T["enrollments"], T["events"], T["metric_points"]

PASS, WARN, FAIL, NO_DATA = "pass", "warn", "fail", "no data"

# ---------------------------------------------------------------- thresholds (the seeds)
GATE_BAND = (0.15, 0.60)  # share of a segment's accounts passing its gate
GATE_FIRST_TARGET = 0.80  # of expanded accounts, share that met the gate before
FIRE_HEALTHY = (0.05, 0.15)
FIRE_TOO_LOW, FIRE_TOO_HIGH = 0.03, 0.40
WHITESPACE_TARGET = 0.30
HEALTH_FIELD = "health_score"
HEALTH_THRESHOLD = 60.0  # the seeds' "healthy": used when neither the settings nor a gate say
WHITESPACE_BANDS = ("strong", "possible")  # a cross-sell opportunity: whitespace score 50+
PROPOSAL_DAYS = (15, 10, 7)  # business days, trigger to proposal: minimum, good, excellent (lower is better)
CSQL_TO_CLOSE = (0.15, 0.25, 0.35)
TRIGGER_ACCURACY = (0.30, 0.50, 0.70)
SELF_SERVE_UPGRADE = (0.03, 0.05, 0.08)
CAC_PER_ARR = (0.35, 0.27, 0.20)  # lower is better
QUALIFIED_SLA_DAYS = 10  # business days at Qualified before Proposal Sent (dsl/pipeline.py)

ADVICE = {
    "gate_strict": "criteria too strict: recalibrate the gate with historical data (review 20 recently expanded "
                   "accounts against it)",
    "gate_loose": "criteria too loose: recalibrate the gate with historical data (review 20 recently expanded "
                  "accounts against it)",
    "gate_first": "review 20 recently expanded accounts against the gate: the criteria miss what expansion needs",
    "fire_high": "raise the threshold (e.g. usage ceiling to 90%), add a health gate",
    "fire_low": "lower the threshold about 20%, or check for missing data",
    "whitespace": "broaden the product adjacency map; review QBR notes for unmet needs",
    "stalling": "CSMs lack expansion skills or capacity: talk-track training; a sales overlay for deals over $5K",
    "proposal": "reduce trigger sensitivity or raise the health threshold; check the Qualified stage's SLA breaches",
    "csql_close": "revisit qualification: which reason codes lose deals after the CSQL",
    "accuracy": "triggers fire on accounts that do not buy: raise thresholds, add a health gate",
    "self_serve": "upgrade UX buried or pricing unclear: test in-app prompts; simplify the pricing page",
    "cac": "expansion costs too much per $1 of ARR: automate low-touch plays, narrow triggers",
    "churn_drag": "expansion may cannibalise retention: audit expanded accounts' churn; tighten the health "
                  "threshold to 85+",
    "nrr_drag": "expanding unhealthy accounts: tighten the health threshold to 85+; audit the last 20 expanded accounts",
}


# ---------------------------------------------------------------- the health threshold

ENV_PREFIX = "PLAYBOOK_DOCTOR_"
TABLE = "doctor"


class DoctorSettings(FileBackedSettings):
    """`PLAYBOOK_DOCTOR_*` or the settings file's `[doctor]` table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source = table_source(TABLE)

    health_threshold: float | None = Field(default=None, ge=0)  # None: from the rules' gates


@dataclass(frozen=True)
class Health:
    """What counts as healthy (`health_score >= value`, or `>` when strict) and where that came from."""

    value: float
    source: str
    strict: bool = False

    @property
    def shown(self) -> str:
        return f"{self.value:g}+" if not self.strict else f"over {self.value:g}"


def load_doctor_settings() -> DoctorSettings:
    try:
        return DoctorSettings()
    except ValidationError as exc:
        raise SettingsError(table_problems(exc, ENV_PREFIX, TABLE)) from None


def _shown_path(file: str) -> str:
    """A rules file as a reader finds it: relative to the working folder when inside it, else its name."""
    path = Path(file)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return path.name


def _health_bars(catalog: Catalog, every_account: bool) -> list[tuple[float, bool, str]]:
    """(value, strict, where) of each gate requirement `account.health_score >= N` (or `>`)."""
    out = []
    for gate in catalog.gates.values():
        for case in gate.cases:
            if (case.when is None) != every_account:
                continue
            for req in case.requires:
                e = req.when
                if (isinstance(e, n.Binary) and e.op in (n.BinOp.GE, n.BinOp.GT) and isinstance(e.left, n.Ref)
                        and e.left.path == ["account", HEALTH_FIELD] and isinstance(e.right, n.Number)):
                    where = f"gate {gate.name} ({_shown_path(e.span.file)}:{e.span.start.line})"
                    out.append((e.right.value, e.op is n.BinOp.GT, where))
    return out


def health_threshold(catalog: Catalog, settings: DoctorSettings | None = None) -> Health:
    """The health bar above which an account counts as healthy: the `[doctor]` setting, else the
    lowest `health_score` requirement of a gate for every account (the seeds' `qualified`), else the
    lowest of any segment's gate, else the seeds' 60."""
    if settings is not None and settings.health_threshold is not None:
        env = f"{ENV_PREFIX}HEALTH_THRESHOLD"
        where = env if env in os.environ else f"health_threshold in [{TABLE}] of {settings_file()[0]}"
        return Health(settings.health_threshold, f"setting {where}")
    for every in (True, False):
        bars = _health_bars(catalog, every)
        if bars:
            value, strict, where = min(bars, key=lambda b: (b[0], not b[1]))
            return Health(value, where, strict)
    return Health(HEALTH_THRESHOLD, "the seeds' default (no gate requires a health_score; set [doctor] "
                                    "health_threshold)")


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str  # what was judged: a gate case, a trigger, "all"
    status: str  # pass | warn | fail | no data
    shown: str  # the numbers behind it, as a reader reads them
    value: float | None = None  # the measured number (a ratio, days, dollars)
    advice: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "subject": self.subject, "status": self.status, "value": self.value,
                "shown": self.shown, "advice": self.advice, "details": self.details}


@dataclass(frozen=True)
class Context:
    conn: Connection
    catalog: Catalog
    today: dt.date
    cost: float | None = None  # what the expansion motion cost, for CAC
    health: Health = Health(HEALTH_THRESHOLD, "the seeds' default")

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    @property
    def accounts(self) -> sa.Table:
        return entity_table(self.catalog.account, "account")

    def has_field(self, name: str) -> bool:
        return name in self.accounts.c


@dataclass(frozen=True)
class Check:
    name: str
    group: str
    thresholds: str  # the seeds' levels, as docs/doctor.md states them
    run: Callable[[Context], list[Finding]]


@dataclass(frozen=True)
class DoctorReport:
    findings: list[Finding]
    today: dt.date

    @property
    def failed(self) -> bool:
        return any(f.status == FAIL for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        counts = {s: sum(1 for f in self.findings if f.status == s) for s in (PASS, WARN, FAIL, NO_DATA)}
        return {"report": "doctor", "today": self.today.isoformat(),
                "checks": [{"name": c.name, "group": c.group, "thresholds": c.thresholds} for c in CHECKS],
                "findings": [f.to_json() for f in self.findings], "summary": counts}


# ---------------------------------------------------------------- judging


def higher_better(value: float, levels: tuple[float, float, float]) -> str:
    minimum, good, _ = levels
    return PASS if value > good else WARN if value > minimum else FAIL


def lower_better(value: float, levels: tuple[float, float, float]) -> str:
    minimum, good, _ = levels
    return PASS if value < good else WARN if value < minimum else FAIL


def level_name(value: float, levels: tuple[float, float, float], higher: bool = True) -> str:
    names = ("minimum", "good", "excellent")
    met = [name for name, x in zip(names, levels, strict=True) if (value > x if higher else value < x)]
    return met[-1] if met else "below minimum"


def _count(conn: Connection, q: Any) -> int:
    return int(conn.execute(q).scalar_one() or 0)


def _pct(r: float | None) -> str:
    return percent(r, 1) or "n/a"


# ---------------------------------------------------------------- what a rule reads


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, n.Node):
        for name in type(node).model_fields:
            yield from _children_of(getattr(node, name))


def _children_of(value: Any) -> Iterator[Any]:
    if isinstance(value, n.Node):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _children_of(v)


def reads(catalog: Catalog, expr: n.Node) -> tuple[list[str], list[str], list[str]]:
    """(account fields, metrics, events) an expression reads, through lets, scores, bands, gates, routes."""
    fields: dict[str, None] = {}
    metrics: dict[str, None] = {}
    events: dict[str, None] = {}
    seen: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, n.Ref):
            head, rest = node.path[0], node.path[1:]
            key = node.dotted
            if key in seen:
                return
            seen.add(key)
            if head == "account" and rest:
                let = catalog.entity_let("account", rest[0])
                if let is not None:
                    visit(let.value)
                elif catalog.entity_field("account", rest[0]) is not None:
                    fields[rest[0]] = None
            elif head in ("score", "band") and rest and rest[0] in catalog.scores:
                visit(catalog.scores[rest[0]])
            elif head == "gate" and rest and rest[0] in catalog.gates:
                visit(catalog.gates[rest[0]])
            elif head == "route" and rest and rest[0] in catalog.routes:
                visit(catalog.routes[rest[0]])
            elif head == "trigger" and rest and rest[0] in catalog.triggers:
                visit(catalog.triggers[rest[0]].when)
            return
        if isinstance(node, n.Symbol):
            if node.name in catalog.metrics:
                metrics[node.name] = None
            elif node.name in catalog.events:
                events[node.name] = None
            return
        for child in _children(node):
            visit(child)

    visit(expr)
    return list(fields), list(metrics), list(events)


def empty_shares(ctx: Context, fields: list[str]) -> dict[str, float]:
    """field -> share of accounts where it is empty (no column: every account)."""
    acc = ctx.accounts
    present = [f for f in fields if f in acc.c]
    out = {f: 1.0 for f in fields if f not in acc.c}
    if present:
        row = ctx.conn.execute(sa.select(sa.func.count(), *[
            sa.func.sum(sa.case((acc.c[f].is_(None), 1), else_=0)) for f in present]).select_from(acc)).one()
        total = int(row[0])
        for f, empty in zip(present, row[1:], strict=True):
            out[f] = ratio(int(empty or 0), total) or 0.0
    return out


# ---------------------------------------------------------------- gates


def _accounts_total(ctx: Context) -> int:
    return _count(ctx.conn, sa.select(sa.func.count()).select_from(ctx.accounts))


def check_gate_shares(ctx: Context) -> list[Finding]:
    """Per gate and per case (segment): the share of the case's accounts that pass it."""
    if not ctx.catalog.gates:
        return [Finding("gate_share", "all", NO_DATA, "the rules declare no gate")]
    if _accounts_total(ctx) == 0:
        return [Finding("gate_share", "all", NO_DATA, "no accounts stored: playbook import accounts=FILE")]
    out: list[Finding] = []
    for gate in ctx.catalog.gates.values():
        if not any(case.when is not None for case in gate.cases):
            continue  # a gate for every account (e.g. `qualified`) is no segment gate: no band applies
        c = compiler(ctx.catalog, ctx.today, ctx.dialect)
        cases = []
        for case in gate.cases:
            applies = c.truth(case.when) if case.when is not None else sa.true()
            reqs = sa.and_(*(c.truth(r.when) for r in case.requires)) if case.requires else sa.true()
            cases.append((case, applies, sa.and_(applies, reqs)))
        cols = []
        for _, applies, passes in cases:
            cols += [sa.func.sum(sa.case((applies, 1), else_=0)), sa.func.sum(sa.case((passes, 1), else_=0))]
        row = ctx.conn.execute(sa.select(*cols).select_from(c.from_clause())).one()
        for i, (case, _, _) in enumerate(cases):
            applies_n, passes_n = int(row[2 * i] or 0), int(row[2 * i + 1] or 0)
            where = format_expr(case.when) if case.when is not None else "every other account"
            subject = f"{gate.name} ({where.replace('account.', '')})"
            share = ratio(passes_n, applies_n)
            if share is None:
                out.append(Finding("gate_share", subject, NO_DATA, f"no account has {where}"))
                continue
            low, high = GATE_BAND
            status = FAIL if share < low or share > high else PASS
            advice = ADVICE["gate_strict"] if share < low else ADVICE["gate_loose"] if share > high else ""
            out.append(Finding("gate_share", subject, status,
                               f"{passes_n:,} of {applies_n:,} accounts pass ({_pct(share)}; healthy 15-60%)",
                               share, advice, {"passing": passes_n, "accounts": applies_n}))
    return out or [Finding("gate_share", "all", NO_DATA, "the rules declare no segment gate (`when` blocks)")]


def _gated_plays(catalog: Catalog) -> dict[str, list[str]]:
    """gate -> plays that declare it."""
    out: dict[str, list[str]] = {}
    for play in catalog.plays.values():
        gate = getattr(play, "gate", None)
        if gate:
            out.setdefault(gate, []).append(play.name)
    return out


def check_gate_first(ctx: Context) -> list[Finding]:
    """Of the accounts that expanded (a won outcome) since the first sweep, the share a sweep had enrolled
    past the gate before the win. Wins before the first sweep's decision cannot be judged: no record says
    whether the account met the gate then."""
    if not _count(ctx.conn, sa.select(sa.func.count()).select_from(OUTCOMES).where(OUTCOMES.c.outcome == "won")):
        return [Finding("gate_first", "all", NO_DATA,
                        "no won outcomes recorded: playbook import outcomes=FILE (or playbook outcome ACCOUNT won)")]
    first_sweep = ctx.conn.execute(sa.select(sa.func.min(DECISIONS.c.at))).scalar()
    if first_sweep is None:
        return [Finding("gate_first", "all", NO_DATA, "no sweep has recorded a decision: playbook sweep")]
    won = sa.select(OUTCOMES.c.account_id, sa.func.min(OUTCOMES.c.at).label("at")).where(
        OUTCOMES.c.outcome == "won", OUTCOMES.c.at >= first_sweep).group_by(OUTCOMES.c.account_id).subquery("won")
    expanded = _count(ctx.conn, sa.select(sa.func.count()).select_from(won))
    since = _instant(first_sweep).date().isoformat()
    if expanded == 0:
        return [Finding("gate_first", "all", NO_DATA,
                        f"no won outcome since the first sweep ({since}): earlier wins cannot be checked against "
                        "the gate")]
    out = []
    for gate, plays in sorted(_gated_plays(ctx.catalog).items()):
        met = sa.exists().where(DECISIONS.c.account_id == won.c.account_id, DECISIONS.c.play.in_(plays),
                                DECISIONS.c.decision == "enrolled", DECISIONS.c.at <= won.c.at)
        first = _count(ctx.conn, sa.select(sa.func.sum(sa.case((met, 1), else_=0))).select_from(won))
        share = ratio(first, expanded) or 0.0
        status = PASS if share >= GATE_FIRST_TARGET else FAIL
        out.append(Finding("gate_first", gate, status,
                           f"{first:,} of {expanded:,} accounts expanded since {since} passed the gate before "
                           f"(enrolled in {', '.join(plays)}) ({_pct(share)}; target 80%+)", share,
                           "" if status == PASS else ADVICE["gate_first"], {"met_first": first, "expanded": expanded}))
    return out or [Finding("gate_first", "all", NO_DATA, "no play declares a gate")]


# ---------------------------------------------------------------- triggers


def check_fire_rates(ctx: Context) -> list[Finding]:
    """Each trigger's fire rate in its latest quarter with decisions (engine.reports.triggers)."""
    from engine.reports.triggers import triggers_report

    if _count(ctx.conn, sa.select(sa.func.count()).select_from(DECISIONS)) == 0:
        return [Finding("fire_rate", "all", NO_DATA, "no sweep has recorded a decision: playbook sweep")]
    report = triggers_report(ctx.conn, today=ctx.today)
    latest: dict[str, Any] = {}
    for r in report.rows:
        latest[r.trigger] = r  # rows are ordered by quarter
    quarter = max((r.quarter for r in report.rows), default=None)
    out = []
    for name in sorted(ctx.catalog.triggers):
        row = latest.get(name)
        fired, q = (row.fired, row.quarter) if row is not None else (0, quarter or "")
        rate = ratio(fired, report.eligible) or 0.0
        shown = f"fired on {fired:,} of {report.eligible:,} accounts in {q or 'any quarter'} ({_pct(rate)}; healthy 5-15%)"
        details: dict[str, Any] = {"fired": fired, "eligible": report.eligible, "quarter": q}
        if rate > FIRE_TOO_HIGH:
            out.append(Finding("fire_rate", name, FAIL, shown, rate, ADVICE["fire_high"], details))
        elif rate < FIRE_TOO_LOW:
            fields, metrics, events = reads(ctx.catalog, ctx.catalog.triggers[name].when)
            empty = {f: s for f, s in empty_shares(ctx, fields).items() if s > 0}
            missing = [m for m in metrics if not _count(ctx.conn, sa.select(sa.func.count()).select_from(
                sa.select(METRICS.c.metric).where(METRICS.c.metric == m).limit(1).subquery()))]
            missing += [e for e in events if not _count(ctx.conn, sa.select(sa.func.count()).select_from(
                sa.select(EVENTS.c.event).where(EVENTS.c.event == e).limit(1).subquery()))]
            gaps = [f"{f} empty on {_pct(s)}" for f, s in sorted(empty.items(), key=lambda x: (-x[1], x[0]))]
            gaps += [f"no {x} data stored" for x in missing]
            details.update(empty_fields={f: round(s, 4) for f, s in empty.items()}, missing_series=missing)
            advice = ADVICE["fire_low"] + (": " + "; ".join(gaps) if gaps else " (every field it reads is filled)")
            out.append(Finding("fire_rate", name, FAIL, shown, rate, advice, details))
        elif FIRE_HEALTHY[0] <= rate <= FIRE_HEALTHY[1]:
            out.append(Finding("fire_rate", name, PASS, shown, rate, "", details))
        else:
            advice = ADVICE["fire_high"] if rate > FIRE_HEALTHY[1] else ADVICE["fire_low"]
            out.append(Finding("fire_rate", name, WARN, shown, rate, advice, details))
    return out


def check_trigger_accuracy(ctx: Context) -> list[Finding]:
    """Of the fires old enough to have closed (engine.reports.triggers: the median days from signal to close),
    the share that converted."""
    from engine.reports.triggers import triggers_report

    report = triggers_report(ctx.conn, today=ctx.today)
    rows = report.rows
    fired = sum(r.fired for r in rows)
    if not fired:
        return [Finding("trigger_accuracy", "all", NO_DATA, "no trigger has fired: playbook sweep")]
    if not _count(ctx.conn, sa.select(sa.func.count()).select_from(OUTCOMES)):
        return [Finding("trigger_accuracy", "all", NO_DATA, "no outcomes recorded: playbook import outcomes=FILE")]
    judged = sum(r.judged for r in rows)
    window = f"fires at least {report.maturity_days} days old ({report.maturity_from})"
    details: dict[str, Any] = {"fired": fired, "judged": judged, "window_days": report.maturity_days}
    if not judged:
        return [Finding("trigger_accuracy", "all", NO_DATA,
                        f"none of the {fired:,} fired accounts is old enough to judge: only {window} count",
                        details=details)]
    converted = sum(r.converted for r in rows)
    acc = converted / judged
    return [Finding("trigger_accuracy", "all", higher_better(acc, TRIGGER_ACCURACY),
                    f"{converted:,} of {judged:,} fired accounts then won ({_pct(acc)}, "
                    f"{level_name(acc, TRIGGER_ACCURACY)}; minimum 30%, good 50%, excellent 70%); {window}; "
                    f"{fired - judged:,} younger fires not judged", acc,
                    "" if acc > TRIGGER_ACCURACY[1] else ADVICE["accuracy"], {"converted": converted, **details})]


# ---------------------------------------------------------------- whitespace


def check_whitespace(ctx: Context) -> list[Finding]:
    """Of the accounts above the health threshold (`health_threshold`), the share with a cross-sell opportunity."""
    if "whitespace" not in ctx.catalog.scores:
        return [Finding("whitespace", "all", NO_DATA, "the rules declare no `score whitespace`")]
    if not ctx.has_field(HEALTH_FIELD):
        return [Finding("whitespace", "all", NO_DATA, f"the accounts have no {HEALTH_FIELD} field")]
    c = compiler(ctx.catalog, ctx.today, ctx.dialect)
    band = c.band("whitespace")
    h = ctx.health
    score = c.field(HEALTH_FIELD)
    healthy = score > h.value if h.strict else score >= h.value
    row = ctx.conn.execute(sa.select(
        sa.func.sum(sa.case((healthy, 1), else_=0)),
        sa.func.sum(sa.case((sa.and_(healthy, band.in_(WHITESPACE_BANDS)), 1), else_=0)),
    ).select_from(c.from_clause())).one()
    total, opp = int(row[0] or 0), int(row[1] or 0)
    share = ratio(opp, total)
    details: dict[str, Any] = {"health_threshold": h.value, "health_threshold_from": h.source}
    if share is None:
        return [Finding("whitespace", "all", NO_DATA,
                        f"no account has a health score of {h.shown} (threshold from {h.source})",
                        details=details)]
    status = PASS if share >= WHITESPACE_TARGET else FAIL
    return [Finding("whitespace", "all", status,
                    f"{opp:,} of {total:,} accounts with health {h.shown} have a cross-sell opportunity "
                    f"(whitespace {' or '.join(WHITESPACE_BANDS)}) ({_pct(share)}; target 30%+); health "
                    f"threshold from {h.source}", share, "" if status == PASS else ADVICE["whitespace"],
                    {"opportunities": opp, "healthy": total, **details})]


# ---------------------------------------------------------------- pipeline


def business_days(start: dt.datetime | dt.date, end: dt.datetime | dt.date) -> int:
    """Weekdays from start's day (excluded) to end's day (included)."""
    a = start.date() if isinstance(start, dt.datetime) else start
    b = end.date() if isinstance(end, dt.datetime) else end
    if b <= a:
        return 0
    days = (b - a).days
    weeks, rest = divmod(days, 7)
    count = weeks * 5
    for i in range(1, rest + 1):
        if (a + dt.timedelta(days=i)).weekday() < 5:
            count += 1
    return count


def _instant(v: Any) -> dt.datetime:
    return v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))


def check_stalling(ctx: Context) -> list[Finding]:
    """Open deals at Qualified longer than its SLA (10 business days to Proposal Sent)."""
    at_qualified = ctx.conn.execute(sa.select(OPPS.c.id, sa.func.max(STAGES.c.at)).select_from(
        OPPS.join(STAGES, sa.and_(STAGES.c.opportunity_id == OPPS.c.id, STAGES.c.stage == pipeline.QUALIFIED)))
        .where(OPPS.c.stage == pipeline.QUALIFIED).group_by(OPPS.c.id)).all()
    ever = _count(ctx.conn, sa.select(sa.func.count(sa.distinct(STAGES.c.opportunity_id))).where(
        STAGES.c.stage == pipeline.QUALIFIED))
    if not ever and not at_qualified:
        return [Finding("qualified_stalling", "all", NO_DATA, "no deal has reached Qualified yet")]
    stalled = sum(1 for _, at in at_qualified if business_days(_instant(at), ctx.today) > QUALIFIED_SLA_DAYS)
    status = PASS if stalled == 0 else WARN
    return [Finding("qualified_stalling", "all", status,
                    f"{stalled:,} of {len(at_qualified):,} deals at Qualified have waited over {QUALIFIED_SLA_DAYS} "
                    f"business days for a proposal ({ever:,} ever qualified)", float(stalled),
                    "" if status == PASS else ADVICE["stalling"],
                    {"stalled": stalled, "at_qualified": len(at_qualified), "ever_qualified": ever})]


def check_trigger_to_proposal(ctx: Context) -> list[Finding]:
    """Mean business days from a deal's creation (the trigger) to its first Proposal Sent."""
    first = ctx.conn.execute(sa.select(OPPS.c.created_at, sa.func.min(STAGES.c.at)).select_from(
        OPPS.join(STAGES, STAGES.c.opportunity_id == OPPS.c.id)).where(
        STAGES.c.stage == pipeline.PROPOSAL_SENT).group_by(OPPS.c.id, OPPS.c.created_at)).all()
    if not first:
        return [Finding("trigger_to_proposal", "all", NO_DATA, "no deal has reached Proposal Sent yet")]
    days = [business_days(_instant(a), _instant(b)) for a, b in first]
    mean = sum(days) / len(days)
    status = lower_better(mean, PROPOSAL_DAYS)
    return [Finding("trigger_to_proposal", "all", status,
                    f"{mean:.1f} business days on average over {len(days):,} proposals "
                    f"({level_name(mean, PROPOSAL_DAYS, higher=False)}; minimum under 15, good under 10, "
                    "excellent under 7)", num(mean), "" if status == PASS else ADVICE["proposal"],
                    {"proposals": len(days)})]


def check_csql_to_close(ctx: Context) -> list[Finding]:
    """Of the deals that reached CSQL Created, the share won (engine.reports.funnel)."""
    from engine.reports.funnel import funnel

    f = funnel(ctx.conn, (pipeline.CSQL_CREATED, pipeline.CLOSED_WON))
    csql, won = f.stages[0].count, f.stages[1].count
    if not csql:
        return [Finding("csql_to_close", "all", NO_DATA, "no deal has reached CSQL Created yet")]
    rate = won / csql
    status = higher_better(rate, CSQL_TO_CLOSE)
    return [Finding("csql_to_close", "all", status,
                    f"{won:,} of {csql:,} CSQLs closed won ({_pct(rate)}, {level_name(rate, CSQL_TO_CLOSE)}; "
                    "minimum 15%, good 25%, excellent 35%)", rate, "" if status == PASS else ADVICE["csql_close"],
                    {"won": won, "csqls": csql})]


def check_self_serve(ctx: Context) -> list[Finding]:
    """Of the accounts a play reached low-touch (route low_touch: automated, self-serve) long enough ago to
    have bought (the median days from signal to close, as for trigger accuracy), the share that won."""
    from engine.reports.triggers import maturity

    low = sa.select(ENROLLMENTS.c.account_id, sa.func.min(ENROLLMENTS.c.started_at).label("at")).where(
        ENROLLMENTS.c.route == "low_touch").group_by(ENROLLMENTS.c.account_id).subquery("low")
    total = _count(ctx.conn, sa.select(sa.func.count()).select_from(low))
    if not total:
        return [Finding("self_serve_upgrade", "all", NO_DATA, "no low-touch enrollment yet: playbook sweep")]
    days, days_from = maturity(ctx.conn)
    cutoff = dt.datetime.combine(ctx.today - dt.timedelta(days=days), dt.time(), dt.timezone.utc)
    old = low.c.at <= cutoff
    won = sa.exists().where(OUTCOMES.c.account_id == low.c.account_id, OUTCOMES.c.outcome == "won",
                            OUTCOMES.c.at >= low.c.at)
    row = ctx.conn.execute(sa.select(sa.func.sum(sa.case((old, 1), else_=0)),
                                     sa.func.sum(sa.case((sa.and_(old, won), 1), else_=0))).select_from(low)).one()
    judged, upgraded = int(row[0] or 0), int(row[1] or 0)
    window = f"enrolled at least {days} days ago ({days_from})"
    details: dict[str, Any] = {"low_touch": total, "judged": judged, "window_days": days}
    if not judged:
        return [Finding("self_serve_upgrade", "all", NO_DATA,
                        f"none of the {total:,} low-touch accounts is old enough to judge: only those {window} "
                        "count", details=details)]
    rate = upgraded / judged
    status = higher_better(rate, SELF_SERVE_UPGRADE)
    return [Finding("self_serve_upgrade", "all", status,
                    f"{upgraded:,} of {judged:,} low-touch accounts upgraded ({_pct(rate)}, "
                    f"{level_name(rate, SELF_SERVE_UPGRADE)}; minimum 3%, good 5%, excellent 8%); those {window}"
                    + (f"; {total - judged:,} younger not judged" if total > judged else ""), rate,
                    "" if status == PASS else ADVICE["self_serve"], {"upgraded": upgraded, **details})]


def _revenue(ctx: Context, since: dt.date | None = None, until: dt.date | None = None) -> Any:
    from engine.reports.revenue import Fields, revenue_report

    fields = Fields(segment="segment" if ctx.has_field("segment") else None,
                    cohort="contract_started_at" if ctx.has_field("contract_started_at") else None)
    return revenue_report(ctx.conn, ctx.accounts, fields=fields, since=since, until=until, cost=ctx.cost,
                          as_of=ctx.today)


def check_cac(ctx: Context) -> list[Finding]:
    if ctx.cost is None:
        return [Finding("expansion_cac", "all", NO_DATA, "no cost given: playbook doctor --cost AMOUNT")]
    if not ctx.has_field("arr"):
        return [Finding("expansion_cac", "all", NO_DATA, "the accounts have no arr field")]
    r = _revenue(ctx)
    per = r.cac_per_arr
    if per is None:
        return [Finding("expansion_cac", "all", NO_DATA, "no expansion ARR won: playbook import outcomes=FILE")]
    status = lower_better(per, CAC_PER_ARR)
    return [Finding("expansion_cac", "all", status,
                    f"${per:.2f} per $1 of expansion ARR (${ctx.cost:,.0f} over ${r.won_arr:,.0f} won "
                    f"{r.since} to {r.until - dt.timedelta(days=1)}; "
                    f"{level_name(per, CAC_PER_ARR, higher=False)}; minimum under $0.35, good under $0.27, "
                    "excellent under $0.20)", num(per, 4), "" if status == PASS else ADVICE["cac"],
                    {"cost": ctx.cost, "won_arr": r.won_arr, "since": r.since.isoformat(),
                     "until": r.until.isoformat()})]


# ---------------------------------------------------------------- retention drag


def check_churn_drag(ctx: Context) -> list[Finding]:
    """Churn among accounts that expanded (churned after their first win) against those that did not."""
    acc = ctx.accounts
    w = OUTCOMES.alias("w")
    won = sa.exists().where(OUTCOMES.c.account_id == acc.c.id, OUTCOMES.c.outcome == "won")
    churned = sa.exists().where(OUTCOMES.c.account_id == acc.c.id, OUTCOMES.c.outcome == "churned")
    first_win = sa.select(sa.func.min(w.c.at)).where(w.c.account_id == acc.c.id, w.c.outcome == "won")
    churned_after = sa.exists().where(OUTCOMES.c.account_id == acc.c.id, OUTCOMES.c.outcome == "churned",
                                      OUTCOMES.c.at >= first_win.scalar_subquery())
    row = ctx.conn.execute(sa.select(
        sa.func.sum(sa.case((won, 1), else_=0)), sa.func.sum(sa.case((sa.and_(won, churned_after), 1), else_=0)),
        sa.func.sum(sa.case((sa.not_(won), 1), else_=0)),
        sa.func.sum(sa.case((sa.and_(sa.not_(won), churned), 1), else_=0))).select_from(acc)).one()
    exp_n, exp_churn, rest_n, rest_churn = (int(v or 0) for v in row)
    if not exp_n:
        return [Finding("churn_drag", "all", NO_DATA, "no won outcomes recorded: playbook import outcomes=FILE")]
    if not exp_churn and not rest_churn:
        return [Finding("churn_drag", "all", NO_DATA,
                        "no churned outcomes recorded: playbook import outcomes=FILE (outcome churned)")]
    a, b = exp_churn / exp_n, ratio(rest_churn, rest_n) or 0.0
    status = FAIL if a > b else PASS
    return [Finding("churn_drag", "all", status,
                    f"expanded accounts churned {_pct(a)} ({exp_churn:,} of {exp_n:,}), the others {_pct(b)} "
                    f"({rest_churn:,} of {rest_n:,})", a, "" if status == PASS else ADVICE["churn_drag"],
                    {"expanded": exp_n, "expanded_churned": exp_churn, "others": rest_n, "others_churned": rest_churn})]


def _quarter_start(d: dt.date) -> dt.date:
    return dt.date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)


def check_nrr_drag(ctx: Context) -> list[Finding]:
    """The last two full quarters before today: NRR falling while expansion ARR rises."""
    if not ctx.has_field("arr"):
        return [Finding("nrr_drag", "all", NO_DATA, "the accounts have no arr field")]
    this_q = _quarter_start(ctx.today)
    prev_q = _quarter_start(this_q - dt.timedelta(days=1))
    before = _quarter_start(prev_q - dt.timedelta(days=1))
    older, newer = _revenue(ctx, before, prev_q).overall, _revenue(ctx, prev_q, this_q).overall
    names = f"{before:%Y}-Q{(before.month + 2) // 3} and {prev_q:%Y}-Q{(prev_q.month + 2) // 3}"
    def moved(r: Any) -> bool:  # an outcome, or an ARR change the field history kept
        return bool(r.expansions or r.expansion_arr or r.churned_arr or r.contraction_arr)

    if not moved(older) or not moved(newer):
        return [Finding("nrr_drag", "all", NO_DATA, f"no outcomes or ARR changes recorded in both of {names}: "
                        "playbook import outcomes=FILE")]
    nrr_a, nrr_b = older.nrr or 0.0, newer.nrr or 0.0
    rising = newer.expansion_arr > older.expansion_arr
    status = FAIL if rising and nrr_b < nrr_a else PASS
    return [Finding("nrr_drag", "all", status,
                    f"{names}: NRR {_pct(nrr_a)} -> {_pct(nrr_b)}, expansion ARR ${older.expansion_arr:,.0f} -> "
                    f"${newer.expansion_arr:,.0f}", nrr_b - nrr_a, "" if status == PASS else ADVICE["nrr_drag"],
                    {"nrr": [nrr_a, nrr_b], "expansion_arr": [older.expansion_arr, newer.expansion_arr]})]


# ---------------------------------------------------------------- the table

CHECKS: tuple[Check, ...] = (
    Check("gate_share", "gates", "pass 15-60% of a segment's accounts; under 15% too strict, over 60% too loose",
          check_gate_shares),
    Check("gate_first", "gates", "80%+ of expanded accounts passed the gate before", check_gate_first),
    Check("fire_rate", "triggers", "5-15% of eligible accounts a quarter; warn 3-5% and 15-40%; fail under 3% "
          "or over 40%", check_fire_rates),
    Check("whitespace", "whitespace", "a cross-sell opportunity in 30%+ of accounts above the health threshold "
          "([doctor] health_threshold, else the lowest health_score a gate for every account requires, else a "
          "segment gate's, else 60)",
          check_whitespace),
    Check("qualified_stalling", "pipeline", "no deal at Qualified over 10 business days (warn)", check_stalling),
    Check("trigger_to_proposal", "pipeline", "business days: minimum under 15, good under 10, excellent under 7",
          check_trigger_to_proposal),
    Check("csql_to_close", "pipeline", "minimum 15%, good 25%, excellent 35%", check_csql_to_close),
    Check("trigger_accuracy", "pipeline", "minimum 30%, good 50%, excellent 70%", check_trigger_accuracy),
    Check("self_serve_upgrade", "pipeline", "minimum 3%, good 5%, excellent 8%", check_self_serve),
    Check("expansion_cac", "pipeline", "per $1 of expansion ARR: minimum under $0.35, good under $0.27, "
          "excellent under $0.20", check_cac),
    Check("churn_drag", "retention", "expanded accounts churn no more than the others", check_churn_drag),
    Check("nrr_drag", "retention", "NRR does not fall while expansion ARR rises (last two quarters)",
          check_nrr_drag),
)
BY_NAME = {c.name: c for c in CHECKS}


def doctor(conn: Connection, catalog: Catalog, *, today: dt.date, cost: float | None = None,
           only: list[str] | None = None, settings: DoctorSettings | None = None) -> DoctorReport:
    ctx = Context(conn, catalog, today, cost, health_threshold(catalog, settings))
    findings: list[Finding] = []
    for check in CHECKS:
        if only and check.name not in only and check.group not in only:
            continue
        findings.extend(check.run(ctx))
    return DoctorReport(findings, today)


__all__ = ["BY_NAME", "CHECKS", "Check", "DoctorReport", "DoctorSettings", "FAIL", "Finding", "Health", "NO_DATA",
           "PASS", "WARN", "business_days", "doctor", "health_threshold", "load_doctor_settings", "reads"]
