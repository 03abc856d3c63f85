"""Helpers of the workflow suites: a time-skipping Temporal test server per test,
and a worker over in-memory connectors. (Not in conftest.py: two conftest
modules cannot both be imported by name in one pytest run.)"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from connectors.base import Connectors
from connectors.memory import MemoryConnector
from dsl.catalog import Catalog
from dsl.evaluator import Account
from workflows.activities import AccountSource, PlayActivities, StaticAccounts
from workflows.client import DATA_CONVERTER
from workflows.play import PlayWorkflow
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


@asynccontextmanager
async def harness(
    connector: Any = None, accounts: AccountSource | None = None, catalog: Catalog | None = None
) -> AsyncIterator[Harness]:
    connector = connector if connector is not None else MemoryConnector()
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
    ) as env:
        # The time-skipping server knows no search attributes: start_play sets
        # ours and the workflow upserts them, so register them first.
        await ensure_registered(env.client)
        acts = PlayActivities(Connectors.single(connector), accounts or StaticAccounts(ACCOUNTS), catalog)
        task_queue = f"tq-{uuid.uuid4()}"
        async with Worker(
            env.client, task_queue=task_queue, workflows=[PlayWorkflow], activities=acts.all(),
            workflow_failure_exception_types=[Exception],  # a workflow-task bug fails the test instead of hanging
        ):
            yield Harness(env, env.client, connector, task_queue)
