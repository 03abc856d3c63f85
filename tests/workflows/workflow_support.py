"""Helpers of the workflow suites: a time-skipping Temporal test server per test,
and a worker over in-memory connectors. (Not in conftest.py: two conftest
modules cannot both be imported by name in one pytest run.)"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from connectors.base import ACTIONS, Connectors
from connectors.memory import MemoryConnector
from dsl.catalog import Catalog
from dsl.evaluator import Account
from workflows.activities import AccountSource, PlayActivities, StaticAccounts
from workflows.client import DATA_CONVERTER
from workflows.play import PlayWorkflow
from workflows.queues import queue_name, step_queues
from workflows.search_attributes import ensure_registered

BIN = Path(sys.executable).parent  # the venv's bin: temporal-test-server lives beside python

ACCOUNTS = {
    "acme": Account(fields={
        "name": "Acme", "usage_percent": "85%", "admin": "ada@acme.test", "csm": "carol",
        "arr": 12000.0, "segment": "enterprise",
    }),
    "tiny": Account(fields={"name": "Tiny", "usage_percent": "90%", "admin": "tim@tiny.test", "csm": "carol",
                            "arr": 800.0, "segment": "smb"}),
    "nameless": Account(fields={"admin": "x@nameless.test", "csm": "carol"}),
}


@dataclass
class Harness:
    env: WorkflowEnvironment
    client: Client
    connector: Any  # MemoryConnector unless a test passes another
    task_queue: str
    queues: dict[str, str]  # PlayInput.queues: every kind on the connector's queue (with connector_queue)


@asynccontextmanager
async def harness(
    connector: Any = None, accounts: AccountSource | None = None, catalog: Catalog | None = None,
    connector_queue: str | None = None,
) -> AsyncIterator[Harness]:
    """`connector_queue`: also poll `<task queue>.<connector_queue>` with `act` alone, as a worker
    polls each connector's queue (workflows/queues.py); pass `Harness.queues` in PlayInput to use it."""
    connector = connector if connector is not None else MemoryConnector()
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
    ) as env:
        # The time-skipping server knows no search attributes: start_play sets
        # ours and the workflow upserts them, so register them first.
        await ensure_registered(env.client)
        acts = PlayActivities(Connectors.single(connector), accounts or StaticAccounts(ACCOUNTS), catalog)
        task_queue = f"tq-{uuid.uuid4()}"
        queues = step_queues(task_queue, {kind: connector_queue for kind in ACTIONS}) if connector_queue else {}
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(Worker(
                env.client, task_queue=task_queue, workflows=[PlayWorkflow], activities=acts.all(),
                workflow_failure_exception_types=[Exception],  # a workflow-task bug fails the test instead of hanging
            ))
            if connector_queue:
                await stack.enter_async_context(Worker(env.client, task_queue=queue_name(task_queue, connector_queue),
                                                       activities=[acts.act]))
            yield Harness(env, env.client, connector, task_queue, queues)
