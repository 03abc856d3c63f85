"""`playbook status`: running plays by play, plan version and step, from Temporal's visibility API.

One `count_workflows` for the total and one listing of running PlayWorkflow
executions, grouped here by the search attributes PlaybookPlay,
PlaybookPlanHash and PlaybookStep (workflows/search_attributes.py). The
server's own GROUP BY only supports ExecutionStatus, hence the client-side
grouping. Runs started without our search attributes are still counted:
their play comes from the workflow id (`play:<play>:<account>`), their plan
version from the memo, their step shows as "?". Paused plays (`playbook
pause`, PlaybookPaused) are counted in each group's `paused`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from urllib.parse import quote, urlsplit

from pydantic import BaseModel
from temporalio.client import Client

from workflows import search_attributes as sa

RUNNING = "WorkflowType = 'PlayWorkflow' AND ExecutionStatus = 'Running'"
UNKNOWN = "?"


class PlayGroup(BaseModel):
    play: str
    title: str | None = None
    plan_hash: str
    step: str
    running: int
    paused: int = 0  # of `running`, how many `playbook pause` holds


class UiLink(BaseModel):
    label: str
    query: str
    url: str


class PauseInForce(BaseModel):
    """A pause recorded in the store (engine/pauses.py): it also holds plays started later."""

    scope: str  # a play's name, or "*" for every play
    since: dt.datetime
    by: str
    reason: str | None = None


class StatusReport(BaseModel):
    address: str
    namespace: str
    query: str
    running: int  # as counted by the server
    listed: int  # how many were listed and grouped (below `running` when limited)
    groups: list[PlayGroup]
    links: list[UiLink] = []  # ready-made Web UI views (`with_links`)
    pauses: list[PauseInForce] = []  # from the store, when the command could read it

    @property
    def paused(self) -> int:
        return sum(g.paused for g in self.groups)

    def by_play(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for g in self.groups:
            out[g.play] += g.running
        return dict(sorted(out.items()))


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def query_for(play: str | None = None) -> str:
    return RUNNING + (f" AND {sa.PLAY.name} = {_quote(play)}" if play else "")


async def running_plays(client: Client, *, play: str | None = None, limit: int = 100_000) -> StatusReport:
    query = query_for(play)
    total = (await client.count_workflows(query)).count
    counts: Counter[tuple[str, str, str]] = Counter()
    paused: Counter[tuple[str, str, str]] = Counter()
    titles: dict[str, str] = {}
    listed = 0
    async for wf in client.list_workflows(query, limit=limit, page_size=1000):
        listed += 1
        attrs = wf.typed_search_attributes
        name = attrs.get(sa.PLAY) or _play_from_id(wf.id)
        plan_hash = attrs.get(sa.PLAN_HASH)
        if plan_hash is None or name not in titles:
            memo = await wf.memo()
            plan_hash = plan_hash or str(memo.get("plan_hash") or UNKNOWN)
            if memo.get("title"):
                titles.setdefault(name, str(memo["title"]))
        group = (name, plan_hash, attrs.get(sa.STEP) or UNKNOWN)
        counts[group] += 1
        paused[group] += attrs.get(sa.PAUSED) is True
    groups = [
        PlayGroup(play=p, title=titles.get(p), plan_hash=h, step=s, running=c, paused=paused[(p, h, s)])
        for (p, h, s), c in sorted(counts.items())
    ]
    config = client.service_client.config
    return StatusReport(address=config.target_host, namespace=client.namespace, query=query, running=total,
                        listed=listed, groups=groups)


def workflows_url(ui_url: str, namespace: str, query: str | None = None) -> str:
    """The Web UI's workflow list of `namespace`, filtered by a visibility query."""
    link = f"{ui_url.rstrip('/')}/namespaces/{quote(namespace)}/workflows"
    return f"{link}?query={quote(query)}" if query else link


def default_ui_url(address: str) -> str | None:
    """Where the Web UI usually is for a frontend address: `playbook dev` serves it on
    the gRPC port + 1000 (localhost:7233 -> :8233); Temporal Cloud at cloud.temporal.io."""
    parts = urlsplit(f"//{address}")
    if parts.hostname in ("localhost", "127.0.0.1", "::1") and parts.port:
        return f"http://localhost:{parts.port + 1000}"
    if parts.hostname and parts.hostname.endswith(".tmprl.cloud"):
        return "https://cloud.temporal.io"
    return None


def with_links(report: StatusReport, ui_url: str, now: dt.datetime) -> StatusReport:
    """The report with Web UI links: the running plays, those due in the next 24 hours
    (PlaybookNextStepAt, overdue included), and each play's running plays."""
    due = (now + dt.timedelta(hours=24)).astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    views = [("running plays", RUNNING),
             ("due in the next 24 hours", f"{RUNNING} AND {sa.NEXT_STEP_AT.name} < '{due}'")]
    if report.paused:
        views.append(("paused", f"{RUNNING} AND {sa.PAUSED.name} = true"))
    views += [(f"play {play}", query_for(play)) for play in report.by_play() if play != UNKNOWN]
    links = [UiLink(label=label, query=q, url=workflows_url(ui_url, report.namespace, q)) for label, q in views]
    return report.model_copy(update={"links": links})


def _play_from_id(workflow_id: str) -> str:
    parts = workflow_id.split(":")
    return parts[1] if len(parts) >= 3 and parts[0] == "play" else UNKNOWN


def render_text(report: StatusReport) -> list[str]:
    """Plain lines (the CLI prints them; a table of play / plan / step / running)."""
    held = [f"paused: {'every play' if p.scope == '*' else 'play ' + p.scope} since {_utc_text(p.since)} "
            f"by {p.by}{': ' + p.reason if p.reason else ''} (plays started later start paused)"
            for p in report.pauses]
    if not report.groups:
        return [f"no running plays ({report.address}, namespace {report.namespace})", *held]
    rows: list[tuple[str, ...]] = [("PLAY", "PLAN", "STEP", "RUNNING", "PAUSED")]
    for g in report.groups:
        rows.append((g.play, g.plan_hash[:12], g.step, str(g.running), str(g.paused) if g.paused else "-"))
    if not report.paused:
        rows = [r[:4] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    plays = report.by_play()
    summary = f"{report.running} running in {len(plays)} play{'s' if len(plays) != 1 else ''}"
    if report.paused:
        summary += f", {report.paused} paused (steps wait for `playbook resume`)"
    if report.listed < report.running:
        summary += f" (grouped the first {report.listed})"
    out = [*lines, "", summary + f" ({report.address}, namespace {report.namespace})", *held]
    if report.links:
        width = max(len(link.label) for link in report.links)
        out += ["", "Web UI:"] + [f"  {link.label.ljust(width)}  {link.url}" for link in report.links]
    return out


def _utc_text(at: dt.datetime) -> str:
    return f"{at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
