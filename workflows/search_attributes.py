"""Typed search attributes of PlayWorkflow: how the Web UI and `playbook status` find plays.

| name               | type    | set by                 | value                                   |
|--------------------|---------|------------------------|-----------------------------------------|
| `PlaybookPlay`     | Keyword | `start_play`           | play name (`usage_limit`)               |
| `PlaybookAccount`  | Keyword | `start_play`           | account id                              |
| `PlaybookPlanHash` | Keyword | `start_play`           | the pinned Plan version                 |
| `PlaybookStep`     | Keyword | the workflow (upsert)  | label of the step it is at (sleeping until, waiting in or running) |
| `PlaybookStage`    | Keyword | the workflow (upsert)  | pipeline stage as last known            |
| `PlaybookNextStepAt` | Datetime | the workflow (upsert) | when the play acts next: the step it sleeps until, or the end of the wait it is in |
| `PlaybookPaused`   | Bool    | the workflow (upsert)  | true while `playbook pause` holds its steps, false once resumed (unset: never paused) |

The Keywords are compared whole (`PlaybookStage = 'Closed Won'`) and
grouped by; a Text attribute is tokenised for full-text search and cannot
be sorted or grouped. Web UI filter examples:

    PlaybookPlay = 'usage_limit' AND ExecutionStatus = 'Running'
    PlaybookStep = 'followup' AND PlaybookPlanHash = '3f2a...'
    ExecutionStatus = 'Running' AND PlaybookNextStepAt < '2026-06-02T09:00:00Z'
    ExecutionStatus = 'Running' AND PlaybookPaused = true

A server must know them before a play is started with them: `playbook dev`
registers them with `--search-attribute`, a worker registers missing ones
at start (`ensure_registered`), tests register them through the operator
service (the time-skipping server has none). A start on a server that does
not know them fails at once with INVALID_ARGUMENT, never silently.

This module is imported inside the workflow sandbox: no side effects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

PLAY = SearchAttributeKey.for_keyword("PlaybookPlay")
ACCOUNT = SearchAttributeKey.for_keyword("PlaybookAccount")
PLAN_HASH = SearchAttributeKey.for_keyword("PlaybookPlanHash")
STEP = SearchAttributeKey.for_keyword("PlaybookStep")
STAGE = SearchAttributeKey.for_keyword("PlaybookStage")
NEXT_STEP_AT = SearchAttributeKey.for_datetime("PlaybookNextStepAt")
PAUSED = SearchAttributeKey.for_bool("PlaybookPaused")
ALL: tuple[SearchAttributeKey[Any], ...] = (PLAY, ACCOUNT, PLAN_HASH, STEP, STAGE, NEXT_STEP_AT, PAUSED)
# workflow.patched id: runs that recorded it upsert NEXT_STEP_AT with the step
# (a new command in history; older runs replay without it).
NEXT_STEP_AT_PATCH = "next-step-at"
# workflow.patched id: runs that recorded it upsert PAUSED when paused or resumed.
PAUSE_PATCH = "pause"

log = logging.getLogger(__name__)


class SearchAttributeError(Exception):
    """The server does not know our search attributes and we may not register them."""


def at_start(play: str, account_id: str, plan_hash: str) -> TypedSearchAttributes:
    """What `start_play` sets: the attributes fixed for the whole enrollment."""
    return TypedSearchAttributes([
        SearchAttributePair(PLAY, play),
        SearchAttributePair(ACCOUNT, account_id),
        SearchAttributePair(PLAN_HASH, plan_hash),
    ])


def cli_flags() -> list[str]:
    """`temporal server start-dev` flags that register them at start."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={_type_name(key)}"]
    return flags


def _type_name(key: SearchAttributeKey[Any]) -> str:
    return key.indexed_value_type.name.title()  # KEYWORD -> Keyword, TEXT -> Text


async def ensure_registered(client: Client, keys: Sequence[SearchAttributeKey[Any]] = ALL) -> list[str]:
    """Register the attributes the namespace lacks; return the names added.

    Works on the dev server, a self-hosted cluster (operator permission
    needed) and the time-skipping test server (which cannot list them: it
    gets all of them added, which it accepts again and again). Raises
    SearchAttributeError when one exists with another type or the server
    refuses to add them (Temporal Cloud: add them with `tcld`).
    """
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
    from temporalio.service import RPCError, RPCStatusCode

    namespace = client.namespace
    wanted = {k.name: IndexedValueType.ValueType(int(k.indexed_value_type)) for k in keys}
    try:
        listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
        known = {**dict(listed.system_attributes), **dict(listed.custom_attributes)}
    except RPCError as exc:
        if exc.status is not RPCStatusCode.UNIMPLEMENTED:
            raise SearchAttributeError(f"cannot list search attributes of namespace {namespace!r}: {exc}") from exc
        known = {}  # the Java test server: add blindly
    for name, kind in wanted.items():
        if name in known and known[name] != kind:
            raise SearchAttributeError(
                f"search attribute {name} exists as {IndexedValueType.Name(known[name])}, "
                f"playbook needs {IndexedValueType.Name(kind)}"
            )
    missing = {name: kind for name, kind in wanted.items() if name not in known}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    except RPCError as exc:
        if exc.status is RPCStatusCode.ALREADY_EXISTS:
            return []  # another worker registered them first
        commands = "; ".join(
            f"temporal operator search-attribute create --name {k.name} --type {_type_name(k)}"
            for k in keys if k.name in missing
        )
        raise SearchAttributeError(
            f"cannot register search attributes {', '.join(missing)} in namespace {namespace!r} ({exc.message}); "
            f"ask an operator to run: {commands}"
        ) from exc
    log.info("registered search attributes %s in namespace %s", ", ".join(missing), namespace)
    return sorted(missing)
