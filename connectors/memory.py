"""An in-memory connector: every capability, idempotent by key.

For tests and `playbook simulate`: it behaves like the store's outbox (a
key acts once) without a database. `attempts` counts every call, `effects`
only the ones that acted, so a test can tell a retried call from a repeated
side effect.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

from connectors.base import Action, FieldChange, Result, StageChange


class MemoryConnector:
    def __init__(self) -> None:
        self.effects: list[Action] = []  # in the order they happened
        self.attempts: Counter[str] = Counter()  # key -> calls, duplicates included
        self._results: dict[str, Result] = {}
        self.stages: dict[str, str] = {}  # account -> stage
        self.fields: dict[tuple[str, str], Any] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    def of_kind(self, kind: type[Action]) -> list[Action]:
        return [e for e in self.effects if isinstance(e, kind)]

    async def act(self, action: Action) -> Result:
        """Any kind: acts once per key (stage and field changes are also remembered)."""
        async with self._lock:
            self.attempts[action.key] += 1
            done = self._results.get(action.key)
            if done is not None:
                return done.model_copy(update={"duplicate": True})
            extra: dict[str, Any] = {}
            if isinstance(action, StageChange):
                extra = {"previous": self.stages.get(action.account_id), "stage": action.stage}
                self.stages[action.account_id] = action.stage
            elif isinstance(action, FieldChange):
                slot = (action.account_id, action.field)
                extra = {"previous": self.fields.get(slot)}
                self.fields[slot] = action.value
            result = action.result(key=action.key, external_id=str(next(self._ids)), **extra)
            self.effects.append(action)
            self._results[action.key] = result
            return result
