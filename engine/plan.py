"""`playbook plan`: what a sweep would do now, and what a change to the rules would change.

Like `terraform plan`, nothing is written. Two questions:

* `enrollment_plan`: which accounts would start which play now (`+`, by
  route, with the ARR they hold), which running enrollments still qualify
  (`=`: a trigger fires and the gate passes) and which no longer do (`-`:
  they keep running — a running play is never cancelled by a sweep — but a
  reviewer wants to know). Skips are counted by reason code.
* `rule_diff`: the same data under two rule sets (the working tree and a
  git revision): per trigger, the accounts it fires on that it did not
  (`+N`) and no longer fires on (`-M`); per play, the accounts that would
  start now under one and not the other. Each side streams its ids sorted
  in code point order and the two streams are merged, so memory stays flat
  whatever the number of accounts.

`rules_at` reads .play files at a git revision with `git archive` into a
temporary folder; the working tree and the index are never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl.catalog import Catalog
from dsl.plan import Plan
from dsl.project import Project, load
from engine.enroll import (ACTIVE, CandidateQuery, Decision, Scratch, Settings, decide, id_order, plan_map, prepare,
                           sends_email)
from engine.evaluate import stream
from engine.schema import Base
from engine.sqlcompile import compiler


class PlanError(Exception):
    """The revision or paths cannot be read."""


@dataclass
class Bucket:
    accounts: int = 0
    arr: float = 0.0

    def add(self, arr: float | None) -> None:
        self.accounts += 1
        self.arr += arr or 0.0

    def to_json(self) -> dict[str, Any]:
        return {"accounts": self.accounts, "arr": round(self.arr, 2)}


@dataclass
class PlayPlan:
    play: str
    title: str
    priority: int
    gate: str | None
    enroll: Bucket = field(default_factory=Bucket)  # +
    by_route: dict[str, Bucket] = field(default_factory=dict)
    running: Bucket = field(default_factory=Bucket)  # =
    no_longer: Bucket = field(default_factory=Bucket)  # -
    skipped: Counter[str] = field(default_factory=Counter)
    holdout: float | None = None  # the play's `holdout N%`
    held_out: Bucket = field(default_factory=Bucket)  # would enroll, kept as the control group

    def to_json(self) -> dict[str, Any]:
        return {"play": self.play, "title": self.title, "priority": self.priority, "gate": self.gate,
                "enroll": self.enroll.to_json(),
                "by_route": {k: v.to_json() for k, v in sorted(self.by_route.items())},
                "running": self.running.to_json(), "no_longer_qualify": self.no_longer.to_json(),
                "skipped": dict(sorted(self.skipped.items())),
                **({"holdout": self.holdout, "held_out": self.held_out.to_json()} if self.holdout else {})}


NO_ROUTE = "(no route)"


@dataclass
class EnrollmentPlan:
    today: dt.date
    accounts: int
    plays: list[PlayPlan]

    @property
    def changes(self) -> bool:
        """Something would be enrolled (what applying the plan would do)."""
        return any(p.enroll.accounts for p in self.plays)

    def to_json(self) -> dict[str, Any]:
        total = Bucket(sum(p.enroll.accounts for p in self.plays), sum(p.enroll.arr for p in self.plays))
        return {"today": self.today.isoformat(), "accounts": self.accounts, "changes": self.changes,
                "enroll": total.to_json(), "plays": [p.to_json() for p in self.plays]}


def enrollment_plan(conn: Connection, catalog: Catalog, plans: Sequence[Plan] | Mapping[str, Plan],
                    today: dt.date, settings: Settings | None = None) -> EnrollmentPlan:
    pm = plan_map(plans)
    out = {p: PlayPlan(p, pm[p].title, pm[p].priority, None if pm[p].ungated else pm[p].gate, holdout=pm[p].holdout)
           for p in sorted(pm)}
    for d in decide(conn, catalog, pm, today, settings):
        pp = out[d.play]
        if d.enroll:
            pp.enroll.add(d.arr)
            pp.by_route.setdefault(d.route or NO_ROUTE, Bucket()).add(d.arr)
        elif d.held_out:
            pp.held_out.add(d.arr)
        else:
            pp.skipped.update(d.codes)
            if d.active and d.qualifies:
                pp.running.add(d.arr)
    # `-`: running now, minus those that still qualify (counted above).
    accounts = compiler(catalog, today, conn.dialect.name).accounts
    enr = Base.metadata.tables["enrollments"]
    # A typed NULL: PostgreSQL cannot choose a sum() for an untyped parameter (rules without an arr field).
    arr = accounts.c.arr if "arr" in accounts.c else sa.cast(sa.null(), sa.Float)
    q = (sa.select(enr.c.play, sa.func.count(), sa.func.sum(arr))
         .select_from(enr.join(accounts, accounts.c.id == enr.c.account_id))
         .where(enr.c.status.in_(ACTIVE)).group_by(enr.c.play))
    for play, n, total in conn.execute(q):
        pp = out.get(play) or out.setdefault(play, PlayPlan(play, f"{play} (not in the rules)", 0, None))
        pp.no_longer = Bucket(int(n) - pp.running.accounts, float(total or 0.0) - pp.running.arr)
    n_accounts = int(conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one())
    return EnrollmentPlan(today, n_accounts, list(out.values()))


# --------------------------------------------------------------------------
# Two rule sets on the same data


@dataclass
class Change:
    """How the set of accounts a rule selects changed between two rule sets."""

    name: str
    status: str  # changed | same | added (only in the new rules) | removed (only in the old)
    before: int = 0
    after: int = 0
    added: int = 0  # accounts selected now and not before
    removed: int = 0  # selected before and not now
    added_arr: float = 0.0
    removed_arr: float = 0.0
    examples_added: list[str] = field(default_factory=list)
    examples_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.status in ("added", "removed") or bool(self.added or self.removed)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "before": self.before, "after": self.after,
                "added": self.added, "removed": self.removed, "added_arr": round(self.added_arr, 2),
                "removed_arr": round(self.removed_arr, 2), "examples_added": self.examples_added,
                "examples_removed": self.examples_removed}


@dataclass
class RuleDiff:
    today: dt.date
    before: str  # e.g. "HEAD~1"
    after: str  # e.g. "working tree"
    triggers: list[Change]
    plays: list[Change]
    sources: list[dict[str, Any]] = field(default_factory=list)  # dsl/source_diff.py: mappings that change

    @property
    def changes(self) -> bool:
        return any(c.changed for c in self.triggers + self.plays) or bool(self.sources)

    def to_json(self) -> dict[str, Any]:
        return {"today": self.today.isoformat(), "before": self.before, "after": self.after,
                "changes": self.changes, "triggers": [c.to_json() for c in self.triggers],
                "plays": [c.to_json() for c in self.plays], "sources": self.sources}


EXAMPLES = 5
V = TypeVar("V")


def merge(a: Iterable[tuple[str, V]], b: Iterable[tuple[str, V]]) -> Iterator[tuple[str, list[V], list[V]]]:
    """Two streams sorted by key (code point order) -> (key, values in a, values in b), keys ascending."""
    ia, ib = _grouped(a), _grouped(b)
    ka, va = next(ia, (None, []))
    kb, vb = next(ib, (None, []))
    while ka is not None or kb is not None:
        if kb is None or (ka is not None and ka < kb):
            yield ka, va, []  # type: ignore[misc]
            ka, va = next(ia, (None, []))
        elif ka is None or kb < ka:
            yield kb, [], vb
            kb, vb = next(ib, (None, []))
        else:
            yield ka, va, vb
            ka, va = next(ia, (None, []))
            kb, vb = next(ib, (None, []))


def _grouped(items: Iterable[tuple[str, V]]) -> Iterator[tuple[str, list[V]]]:
    key: str | None = None
    group: list[V] = []
    for k, v in items:
        if key is not None and k < key:
            raise AssertionError(f"stream not sorted: {k!r} after {key!r}")
        if k != key and key is not None:
            yield key, group
            group = []
        key = k
        group.append(v)
    if key is not None:
        yield key, group


def _fired_query(catalog: Catalog, trigger: str, today: dt.date, dialect: str) -> sa.Select:
    c = compiler(catalog, today, dialect)
    acc = c.accounts
    arr = sa.cast(c.field("arr"), sa.Float) if catalog.entity_field("account", "arr") else sa.cast(sa.null(), sa.Float)
    cond = c.truth(catalog.triggers[trigger].when)  # compile first: it registers the window joins
    return (sa.select(acc.c.id, arr).select_from(c.from_clause()).where(cond)
            .order_by(id_order(acc.c.id, dialect)))


def _rows(conn: Connection, q: sa.Select | None) -> Iterator[tuple[str, Any]]:
    if q is None:
        return iter(())
    return ((row[0], row[1]) for row in stream(conn, q))


def same_sql(conn: Connection, a: sa.Select | None, b: sa.Select | None) -> bool:
    """Whether two queries are the same SQL with the same parameters: then, on the same data,
    they return the same rows, so one run answers for both (most triggers of a pull request)."""
    if a is None or b is None:
        return a is b
    ca, cb = a.compile(dialect=conn.dialect), b.compile(dialect=conn.dialect)
    return str(ca) == str(cb) and ca.params == cb.params


def _tally(change: Change, stream_pairs: Iterator[tuple[str, list[Any], list[Any]]], arr_of: Any) -> None:
    for key, old, new in stream_pairs:
        change.before += bool(old)
        change.after += bool(new)
        if new and not old:
            change.added += 1
            change.added_arr += arr_of(new[0]) or 0.0
            if len(change.examples_added) < EXAMPLES:
                change.examples_added.append(key)
        elif old and not new:
            change.removed += 1
            change.removed_arr += arr_of(old[0]) or 0.0
            if len(change.examples_removed) < EXAMPLES:
                change.examples_removed.append(key)


def rule_diff(conn: Connection, old: tuple[Catalog, Sequence[Plan]], new: tuple[Catalog, Sequence[Plan]],
              today: dt.date, settings: Settings | None = None, before: str = "before",
              after: str = "after") -> RuleDiff:
    """Per trigger and per play, the accounts one rule set selects and the other does not."""
    (old_cat, old_plans), (new_cat, new_plans) = old, new
    triggers: list[Change] = []
    names = list(new_cat.triggers) + [t for t in old_cat.triggers if t not in new_cat.triggers]
    dialect = conn.dialect.name
    for t in names:
        in_old, in_new = t in old_cat.triggers, t in new_cat.triggers
        status = "changed" if in_old and in_new else ("added" if in_new else "removed")
        ch = Change(t, status)
        qa = _fired_query(old_cat, t, today, dialect) if in_old else None
        qb = _fired_query(new_cat, t, today, dialect) if in_new else None
        if in_old and in_new and same_sql(conn, qa, qb):
            ch.status = "same"
            ch.before = ch.after = sum(1 for _ in _rows(conn, qb))
        else:
            _tally(ch, merge(_rows(conn, qa), _rows(conn, qb)), lambda arr: arr)
            if ch.status == "changed" and not ch.changed:
                ch.status = "same"
        triggers.append(ch)

    # Plays: the accounts that would start each play now, under each rule set.
    po, pn = plan_map(old_plans), plan_map(new_plans)
    plays = {p: Change(p, "changed" if p in po and p in pn else ("added" if p in pn else "removed"))
             for p in list(pn) + [p for p in po if p not in pn]}

    def starts(decisions: Iterator[Decision]) -> Iterator[tuple[str, Decision]]:
        return ((d.account_id, d) for d in decisions if d.enroll)

    # Both sides are read side by side on one connection: both find their
    # candidates before either is read, their temporary tables are dropped
    # once both streams are closed (see enroll.prepare), and the streams are
    # closed before the caller's connection is.
    with Scratch(conn) as scratch, contextlib.ExitStack() as streams:
        new_ds = streams.enter_context(contextlib.closing(prepare(scratch, new_cat, pn, today, settings)))
        old_stream: Iterator[tuple[str, Decision]]
        new_stream = starts(new_ds)
        if _same_sweep(conn, (old_cat, po), (new_cat, pn), today, settings):
            # Same query, same play settings: the same decisions. Run it once, feed both sides
            # (merge() pulls both in step, so tee's buffer stays one account deep).
            old_stream, new_stream = itertools.tee(new_stream)
        else:
            old_ds = streams.enter_context(contextlib.closing(prepare(scratch, old_cat, po, today, settings)))
            old_stream = starts(old_ds)
        for key, before_ds, after_ds in merge(old_stream, new_stream):
            _tally_plays(plays, key, before_ds, after_ds)
    for ch in plays.values():
        if ch.status == "changed" and not ch.changed:
            ch.status = "same"
    return RuleDiff(today, before, after, triggers, sorted(plays.values(), key=lambda c: c.name))


def _tally_plays(plays: dict[str, Change], key: str, old_ds: list[Decision], new_ds: list[Decision]) -> None:
    o = {d.play: d for d in old_ds}
    n = {d.play: d for d in new_ds}
    for p in set(o) | set(n):
        ch = plays[p]
        ch.before += p in o
        ch.after += p in n
        if p in n and p not in o:
            ch.added += 1
            ch.added_arr += n[p].arr or 0.0
            if len(ch.examples_added) < EXAMPLES:
                ch.examples_added.append(key)
        elif p in o and p not in n:
            ch.removed += 1
            ch.removed_arr += o[p].arr or 0.0
            if len(ch.examples_removed) < EXAMPLES:
                ch.examples_removed.append(key)


def _same_sweep(conn: Connection, old: tuple[Catalog, dict[str, Plan]], new: tuple[Catalog, dict[str, Plan]],
                today: dt.date, settings: Settings | None) -> bool:
    def policy(pm: dict[str, Plan]) -> dict[str, tuple[Any, ...]]:
        return {p: (pl.priority, pl.concurrent, pl.reenter_days, pl.ungated, pl.gate, sends_email(pl))
                for p, pl in pm.items()}

    if policy(old[1]) != policy(new[1]):
        return False
    settings = settings or Settings()
    qa = CandidateQuery(old[0], old[1], today, conn.dialect.name, settings).query()
    qb = CandidateQuery(new[0], new[1], today, conn.dialect.name, settings).query()
    return same_sql(conn, qa, qb)


# --------------------------------------------------------------------------
# Rules at a git revision


def _git(cwd: Path, *args: str) -> bytes:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False, timeout=120)
    except FileNotFoundError as e:
        raise PlanError("git is not installed") from e
    if proc.returncode != 0:
        raise PlanError(f"git {' '.join(args[:2])}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def rules_at(paths: Sequence[str | Path], rev: str, into: Path) -> Project:
    """The .play files under `paths` as they were at `rev`, extracted into `into` and loaded.

    Paths are taken relative to the repository that holds them; a path that
    did not exist at `rev` is an error (nothing to compare against).
    """
    resolved = [Path(p).resolve() for p in paths]
    anchor = resolved[0] if resolved[0].is_dir() else resolved[0].parent
    root = Path(_git(anchor, "rev-parse", "--show-toplevel").decode().strip())
    rels = []
    for p in resolved:
        try:
            rels.append(p.relative_to(root).as_posix() or ".")
        except ValueError:
            raise PlanError(f"{p} is not inside the git repository at {root}") from None
    try:
        _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except PlanError:
        raise PlanError(f"unknown git revision '{rev}' in {root}") from None
    data = _git(root, "archive", "--format=tar", rev, "--", *rels)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return load([into / r for r in rels])


def temp_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="playbook-rev-")


__all__ = ["Bucket", "Change", "EnrollmentPlan", "PlanError", "PlayPlan", "RuleDiff", "enrollment_plan", "merge",
           "rule_diff", "rules_at", "temp_dir"]
