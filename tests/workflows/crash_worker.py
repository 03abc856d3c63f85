"""A worker for tests/workflows/test_crash.py, run as a subprocess and killed with SIGKILL.

The real store worker (workflows/worker.py), except that every email of
step `$CRASH_SLOW_STEP` stalls `$CRASH_SLOW_SECONDS` AFTER its outbox row is
committed (any attempt: a transient "database is locked" may have failed
the first): killing the process then is the worst moment (the customer's
email is recorded, Temporal never hears of it).

    python tests/workflows/crash_worker.py PLAYBOOKS_DIR
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from temporalio import activity  # noqa: E402

from connectors import base as cb  # noqa: E402
from connectors.store import StoreConnector  # noqa: E402
from engine.store import Store  # noqa: E402
from workflows.accounts import StoreAccounts  # noqa: E402
from workflows.activities import PlayActivities  # noqa: E402
from workflows.settings import TemporalSettings  # noqa: E402
from workflows.worker import hard_exit, load_catalog, run_worker  # noqa: E402


class StallAfterCommit(StoreConnector):
    def __init__(self, store: Store, step: str, seconds: float) -> None:
        super().__init__(store)
        self.step, self.seconds = step, seconds

    async def send_email(self, message: cb.EmailMessage) -> cb.EmailResult:
        result = await super().send_email(message)
        if message.step == self.step:
            print(f"stalling after commit: {message.key} (attempt {activity.info().attempt})", file=sys.stderr, flush=True)
            await asyncio.sleep(self.seconds)
        return result


def main() -> None:
    catalog = load_catalog([sys.argv[1]])
    store = Store.open(os.environ["PLAYBOOK_DATABASE_URL"], catalog=catalog)
    connector = StallAfterCommit(store, os.environ["CRASH_SLOW_STEP"], float(os.environ["CRASH_SLOW_SECONDS"]))
    acts = PlayActivities(cb.Connectors.single(connector), StoreAccounts(store, catalog), catalog)
    asyncio.run(run_worker(TemporalSettings.from_env(), activities=acts))
    hard_exit(0)


if __name__ == "__main__":
    main()
