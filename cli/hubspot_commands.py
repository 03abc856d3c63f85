"""`playbook hubspot-pipeline`: the built-in stages' mapping onto a HubSpot deal pipeline.

Thin: presentation over connectors/hubspot.py. Without `--create` it reads
the pipeline the `[hubspot]` settings name and shows where each of our
stages lands (exit 1 when a mapped stage id is not in it); with `--create`
it makes a deal pipeline with the seven stages and prints the `[hubspot]`
lines that map onto it. A missing token or a refused request is exit 2,
HubSpot not answering exit 4.
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from cli.common import EXIT_FINDINGS, EXIT_UNREACHABLE, EXIT_USAGE, Fail

T = TypeVar("T")


class Format(str, enum.Enum):
    text = "text"
    json = "json"


def _connector() -> Any:
    """The HubSpot connector over the [hubspot] settings (a bad or missing setting: exit 2)."""
    from connectors.hubspot import HubSpotConnector, load_hubspot_settings
    from engine.settings import SettingsError

    try:
        return HubSpotConnector(load_hubspot_settings())
    except SettingsError as exc:
        raise Fail(f"hubspot settings: {exc}") from None


def _run(connector: Any, work: Callable[[], Awaitable[T]]) -> T:
    """`work()` on `connector`'s client, closed afterwards; connector errors as exit codes."""
    from connectors import base as cb

    async def go() -> T:
        try:
            return await work()
        finally:
            await connector.aclose()

    try:
        return asyncio.run(go())
    except cb.TransientError as exc:
        raise Fail(str(exc), EXIT_UNREACHABLE) from None
    except cb.ConnectorError as exc:
        raise Fail(str(exc), EXIT_USAGE) from None


def _toml(pipeline: str, stages: dict[str, str]) -> str:
    lines = ["[hubspot]", f"pipeline = {json.dumps(pipeline)}", "", "[hubspot.stages]"]
    return "\n".join([*lines, *(f"{json.dumps(name)} = {json.dumps(sid)}" for name, sid in stages.items())])


def hubspot_pipeline(
    create: Annotated[bool, typer.Option("--create", help="Make a deal pipeline with the seven stages in HubSpot "
                                         "and print the [hubspot] settings that map onto it.")] = False,
    label: Annotated[str, typer.Option("--label", help="The new pipeline's name (with --create).")]
    = "Expansion (CSQL)",
    format: Annotated[Format, typer.Option("--format", help="text or json.")] = Format.text,
) -> None:
    """Show the stages' mapping onto the HubSpot deal pipeline, checked against it; or --create that pipeline."""
    connector = _connector()
    if create:
        pipeline, stages = _run(connector, lambda: connector.create_csql_pipeline(label))
        if format is Format.json:
            typer.echo(json.dumps({"pipeline": pipeline, "stages": stages}, indent=2))
        else:
            typer.echo(f"# HubSpot deal pipeline {label!r} made; put these lines in the settings file:\n")
            typer.echo(_toml(pipeline, stages))
        return
    found = _run(connector, connector.read_pipeline)
    settings = connector.settings
    rows = [{"stage": name, "id": sid, "label": found.get(sid)} for name, sid in settings.stages.items()]
    missing = [r for r in rows if r["label"] is None]
    if format is Format.json:
        typer.echo(json.dumps({"pipeline": settings.pipeline, "stages": rows, "ok": not missing}, indent=2))
    else:
        typer.echo(f"HubSpot deal pipeline {settings.pipeline!r}:")
        width = max(len(r["stage"]) for r in rows) if rows else 0
        for r in rows:
            shown = r["label"] if r["label"] is not None else "NOT IN THE PIPELINE"
            typer.echo(f"  {r['stage']:<{width}}  -> {r['id']}  {shown}")
        if missing:
            typer.echo(f"{len(missing)} stage(s) map onto ids the pipeline does not have: fix [hubspot.stages] "
                       "(or make a pipeline with `playbook hubspot-pipeline --create`)")
    if missing:
        raise typer.Exit(EXIT_FINDINGS)


def register(app: typer.Typer) -> None:
    app.command("hubspot-pipeline")(hubspot_pipeline)


__all__ = ["register"]
