"""`playbook demo-data` and `playbook import`: putting account data into the store.

Thin functions over engine/demo_data.py and engine/importers.py. Exit codes
as everywhere: 0 done, 1 rejected data (nothing written), 2 bad usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import DbOpt, Fail, TextOrJson, TodayOpt
from cli.common import today as today_in_team_zone
from cli.progress import Progress
from cli.rules import RulesOpt, checked
from cli.rules import paths as rule_paths


def _catalog(given: list[Path] | None, json_mode: bool) -> Any:
    """The declarations the data is checked against (cli/rules.py: the loader every command uses)."""
    return checked(rule_paths(given), json_mode).catalog


def _store(url: str | None, catalog: Any) -> Any:
    """The store, created or migrated as needed: these commands write."""
    from engine.store import Store, StoreError

    try:
        return Store.open(url, catalog=catalog)
    except StoreError as exc:  # a bad URL, a schema conflict; unreachable goes to the guard (exit 4)
        raise Fail(f"cannot open the store{f' at {url}' if url else ''}: {exc}") from exc


def _import_outcomes(db: str | None, paths: list[str], format: TextOrJson) -> None:
    """Outcomes (engine/outcomes.py): into a store that holds the accounts; all or nothing."""
    from engine.importers import ImportFailed
    from engine.outcomes import import_outcomes
    from engine.store import removed_if_failed

    try:
        with removed_if_failed(db):  # a mistyped --db must not become an empty store
            store = _store(db, None)
            try:
                results = store.retry(lambda: import_outcomes(store, paths))
            finally:
                store.close()
    except ImportFailed as exc:
        if format == TextOrJson.json:
            print(json.dumps({"imported": False, "problems": exc.total, "errors": [
                {"file": e.file, "row": e.row, "column": e.column, "reason": e.reason} for e in exc.errors]}))
        else:
            print(str(exc), file=sys.stderr)
        raise typer.Exit(1) from None
    if format == TextOrJson.json:
        print(json.dumps({"imported": True, "files": [
            {"kind": "outcomes", "file": r.file, "rows": r.rows, "created": r.created, "updated": r.updated}
            for r in results]}))
        return
    for r in results:
        print(f"{r.file}: {r.rows:,} outcomes rows ({r.created:,} new, {r.updated:,} updated)")


def register(app: typer.Typer) -> None:
    @app.command("demo-data")
    def demo_data(
        accounts: Annotated[int, typer.Option("--accounts", help="How many accounts to generate.")] = 1000,
        seed: Annotated[int, typer.Option("--seed", help="Same seed, same data.")] = 7,
        today: TodayOpt = None,
        replace: Annotated[bool, typer.Option("--replace", help="Empty the store's account data first.")] = False,
        db: DbOpt = None,
        rules: RulesOpt = None,
        format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
    ) -> None:
        """Generate a realistic synthetic data set: segments, ARR, seats, usage, health, history, events."""
        from engine.demo_data import DemoDataError, generate

        if accounts < 0:
            raise Fail("--accounts cannot be negative")
        day = today_in_team_zone(today)
        catalog = _catalog(rules, format == TextOrJson.json)
        store = _store(db, catalog)
        with Progress("playbook demo-data") as progress:
            try:  # not retried (it writes in several transactions), but faults are typed
                result = store.retry(lambda: generate(catalog, accounts, seed=seed, today=day, store=store,
                                                      replace=replace, progress=progress.update), delays=())
            except DemoDataError as exc:
                raise Fail(str(exc).replace("replace=True", "--replace")) from exc
            finally:
                store.close()
        summary = {
            "store": store.url, "accounts": result.accounts, "contacts": result.contacts, "users": result.users,
            "metric_points": result.metric_points, "events": result.events, "seconds": round(result.seconds, 1),
        }
        if format == TextOrJson.json:
            print(json.dumps(summary))
            return
        print(f"Wrote {result.accounts:,} accounts, {result.contacts:,} contacts, {result.users:,} users, "
              f"{result.metric_points:,} metric points and {result.events:,} events to {store.url} "
              f"in {result.seconds:.1f} s.")

    @app.command("import")
    def import_(
        files: Annotated[list[str], typer.Argument(
            help="KIND=FILE pairs; KIND is users, accounts, contacts, metrics, events or outcomes; FILE is .csv or .jsonl.",
            show_default=False)],
        db: DbOpt = None,
        rules: RulesOpt = None,
        ignore_unknown_columns: Annotated[bool, typer.Option(
            "--ignore-unknown-columns", help="Skip columns the declarations do not know.")] = False,
        format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
    ) -> None:
        """Import CSV / JSON Lines files, checked against the entity declarations; all or nothing."""
        from engine.importers import KINDS, ImportFailed, import_files
        from engine.store import removed_if_failed

        pairs: list[tuple[Any, str]] = []
        for item in files:
            kind, sep, path = item.partition("=")
            if not sep or kind not in (*KINDS, "outcomes"):
                raise Fail(f"'{item}': write KIND=FILE with KIND one of {', '.join((*KINDS, 'outcomes'))}")
            if not Path(path).is_file():
                raise Fail(f"no such file: {path}")
            pairs.append((kind, path))
        if any(k == "outcomes" for k, _ in pairs):
            if any(k != "outcomes" for k, _ in pairs):
                raise Fail("import outcomes on their own, after the accounts they refer to "
                           "(`playbook import outcomes=FILE`)")
            _import_outcomes(db, [p for _, p in pairs], format)
            return
        catalog = _catalog(rules, format == TextOrJson.json)
        with removed_if_failed(db):  # all or nothing: a failed first import leaves no store (nor folder) behind
            store = _store(db, catalog)
            try:
                with Progress("playbook import") as progress:
                    # One transaction, all or nothing: safe to run again over a transient fault.
                    report = store.retry(lambda: import_files(
                        store, catalog, pairs, ignore_unknown_columns=ignore_unknown_columns,
                        progress=lambda file, rows: progress.update(f"importing {file}", done=rows)))
            except ImportFailed as exc:
                if format == TextOrJson.json:
                    print(json.dumps({"imported": False, "problems": exc.total, "errors": [
                        {"file": e.file, "row": e.row, "column": e.column, "reason": e.reason} for e in exc.errors]}))
                else:
                    print(str(exc), file=sys.stderr)
                raise typer.Exit(1) from None
            finally:
                store.close()
        if format == TextOrJson.json:
            print(json.dumps({"imported": True, "files": [
                {"kind": f.kind, "file": f.file, "rows": f.rows, "created": f.created, "updated": f.updated}
                for f in report.files]}))
            return
        for f in report.files:
            print(f"{f.file}: {f.rows:,} {f.kind} rows ({f.created:,} new, {f.updated:,} updated)")
