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
                    _print(outcome)
        finally:
            store.close()
        if json_mode:
            print(json.dumps({"synced": code == EXIT_OK, "sources": outcomes}))
        raise typer.Exit(code)


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
    out = {k: v for k, v in last.items() if k not in ("started_at", "finished_at")}
    out["run"] = out.pop("id")
    out["problems"] = problems
    return out, code


def _print(o: dict[str, Any]) -> None:
    mode = "full" if o.get("full") else "from its cursor"
    print(f"source {o['source']}: {o['status']} ({mode}): {o['read']:,} read in {o['batches']:,} batch(es), "
          f"{o['created']:,} new, {o['updated']:,} updated, {o['changed']:,} value(s) changed, "
          f"{o['refused']:,} refused")
