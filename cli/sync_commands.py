"""`playbook sync [SOURCE] [--full]`: run a declared source's sync now (docs/sources.md).

Exit codes: 0 synced; 1 a batch refused (its problems named by source,
record and field; batches before it stay written); 2 bad usage (an unknown
source, a missing setting, a query the warehouse refuses); 4 the source or
the store could not be reached (what was written stays, the next sync
resumes from its cursor).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer

from cli.common import EXIT_FINDINGS, EXIT_OK, EXIT_UNREACHABLE, DbOpt, Fail, TextOrJson
from cli.rules import RulesOpt, checked
from cli.rules import paths as rule_paths


def register(app: typer.Typer) -> None:
    register_schedules(app)

    @app.command("sync")
    def sync(
        source: Annotated[str | None, typer.Argument(help="The source to sync (default: every declared source).",
                                                     show_default=False)] = None,
        full: Annotated[bool, typer.Option("--full", help="Read everything again, not from the stored cursor.")]
        = False,
        db: DbOpt = None,
        rules: RulesOpt = None,
        format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
    ) -> None:
        """Sync declared sources into the store now: all or nothing per batch, resumed from the cursor."""
        from dsl.suggest import did_you_mean
        from engine.store import Store, StoreError

        json_mode = format == TextOrJson.json
        project = checked(rule_paths(rules), json_mode)
        declared = project.catalog.sources
        if not declared:
            raise Fail("no source is declared: add a `source NAME from ...` declaration (docs/language.md)")
        if source is not None and source not in declared:
            raise Fail(f"no source named '{source}'. {did_you_mean(source, declared)}".strip()
                       + f" Declared: {', '.join(sorted(declared))}")
        names = [source] if source is not None else list(declared)
        try:
            store = Store.open(db, catalog=project.catalog)
        except StoreError as exc:
            raise Fail(f"cannot open the store{f' at {db}' if db else ''}: {exc}") from exc
        outcomes: list[dict[str, Any]] = []
        code = EXIT_OK
        try:
            for name in names:
                outcome, exit_code = _one(store, project.catalog, declared[name], full)
                outcomes.append(outcome)
                code = max(code, exit_code)
                if not json_mode:
                    _print(outcome, declared[name].fills)
        finally:
            store.close()
        if json_mode:
            print(json.dumps({"synced": code == EXIT_OK, "sources": outcomes}))
        raise typer.Exit(code)


def register_schedules(app: typer.Typer) -> None:
    schedules = typer.Typer(help="Temporal Schedules of the declared sources.", no_args_is_help=True)
    app.add_typer(schedules, name="schedules")

    from cli.workflow_commands import temporal_command

    @schedules.command("apply")
    @temporal_command("schedules apply")
    def apply(
        rules: RulesOpt = None,
        address: Annotated[str | None, typer.Option(
            "--address", help="Temporal frontend host:port [env PLAYBOOK_TEMPORAL_ADDRESS; default localhost:7233].",
            show_default=False)] = None,
        namespace: Annotated[str | None, typer.Option(
            "--namespace", help="Temporal namespace [env PLAYBOOK_TEMPORAL_NAMESPACE].", show_default=False)] = None,
        task_queue: Annotated[str | None, typer.Option(
            "--task-queue", help="Task queue of the workers [env PLAYBOOK_TEMPORAL_TASK_QUEUE; default playbook].",
            show_default=False)] = None,
        format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
    ) -> None:
        """Create or update one Schedule per declared source (every `every_minutes` of [sources.NAME]);
        delete the Schedules of sources no longer declared. Workers run them."""
        from cli.sweep_commands import _temporal
        from connectors.sources import SourceSettingsError
        from workflows.settings import connect
        from workflows.sync import apply_schedules

        async def _apply(settings: Any) -> tuple[list[str], list[str]]:
            client = await connect(settings)
            return await apply_schedules(client, project.catalog, task_queue=settings.task_queue)

        project = checked(rule_paths(rules), format == TextOrJson.json)
        temporal = _temporal(address, namespace, task_queue)
        try:
            applied, deleted = asyncio.run(_apply(temporal))
        except SourceSettingsError as exc:
            raise Fail(str(exc)) from exc
        if format == TextOrJson.json:
            print(json.dumps({"applied": applied, "deleted": deleted}))
            return
        for sid in applied:
            print(f"schedule {sid}: applied (task queue {temporal.task_queue})")
        for sid in deleted:
            print(f"schedule {sid}: deleted (its source is no longer declared)")
        if not applied and not deleted:
            print("no source is declared and no source schedule exists")


def _one(store: Any, catalog: Any, decl: Any, full: bool) -> tuple[dict[str, Any], int]:
    from connectors.sources import SourceSettingsError, reader_for
    from engine.sync import SourceProblem, SourceUnreachable, SyncRefused, run_sync, runs

    try:
        reader = reader_for(decl)
    except (SourceProblem, SourceSettingsError) as exc:
        raise Fail(str(exc)) from exc
    problems: list[dict[str, Any]] = []
    try:
        result = asyncio.run(run_sync(store, catalog, decl, reader, full=full))
        return result.as_json(), EXIT_OK
    except SyncRefused as exc:
        print(str(exc), file=sys.stderr)
        code = EXIT_FINDINGS
        problems = [{"record": p.record, "field": p.field, "reason": p.reason} for p in exc.errors]
    except SourceUnreachable as exc:
        print(str(exc), file=sys.stderr)
        code = EXIT_UNREACHABLE
    except SourceProblem as exc:
        raise Fail(str(exc)) from exc
    with store.engine.connect() as conn:
        last = runs(conn, decl.name, limit=1)[0]
    out = {k: v for k, v in last.items() if k not in ("started_at", "finished_at", "heartbeat_at")}
    out["run"] = out.pop("id")
    out["problems"] = problems
    return out, code


def _print(o: dict[str, Any], fills: str | None) -> None:
    mode = "full" if o.get("full") else "from its cursor"
    if fills in ("metric", "event"):  # points and events are written (again), not new or updated
        what = "metric point(s)" if fills == "metric" else "event(s)"
        print(f"source {o['source']}: {o['status']} ({mode}): {o['read']:,} read in {o['batches']:,} batch(es), "
              f"{o['created']:,} {what} written, {o['refused']:,} refused{_skipped(o)}")
        return
    print(f"source {o['source']}: {o['status']} ({mode}): {o['read']:,} read in {o['batches']:,} batch(es), "
          f"{o['created']:,} new, {o['updated']:,} updated, {o['changed']:,} value(s) changed, "
          f"{o['refused']:,} refused")


def _skipped(o: dict[str, Any]) -> str:
    """The rows of a `named by` source naming an event it does not land: a misspelt name, or one to declare."""
    if not o.get("skipped"):
        return ""
    names = ", ".join(f"{name!r} x{count:,}" for name, count in (o.get("skipped_names") or {}).items())
    return f", {o['skipped']:,} skipped (events this source does not land: {names})"
