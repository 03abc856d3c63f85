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
from typing import Any, TypeVar

from connectors.base import (
    Action,
    EmailMessage,
    EmailResult,
    FieldChange,
    FieldResult,
    NewOpportunity,
    NewTask,
    Notification,
    NotifyResult,
    OpportunityResult,
    Result,
    StageChange,
    StageResult,
    TaskResult,
    TrialGrant,
    TrialResult,
    WebhookCall,
    WebhookResult,
)

R = TypeVar("R", bound=Result)


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

    async def _once(self, action: Action, make: type[R], **fields: Any) -> R:
        async with self._lock:
            self.attempts[action.key] += 1
            done = self._results.get(action.key)
            if done is not None:
                return done.model_copy(update={"duplicate": True})  # type: ignore[return-value]
            result = make(key=action.key, external_id=str(next(self._ids)), **fields)
            self.effects.append(action)
            self._results[action.key] = result
            return result

    async def send_email(self, message: EmailMessage) -> EmailResult:
        return await self._once(message, EmailResult)

    async def create_task(self, task: NewTask) -> TaskResult:
        return await self._once(task, TaskResult)

    async def change_stage(self, change: StageChange) -> StageResult:
        previous = self.stages.get(change.account_id)
        result = await self._once(change, StageResult, previous=previous, stage=change.stage)
        if not result.duplicate:
            self.stages[change.account_id] = change.stage
        return result

    async def create_opportunity(self, opportunity: NewOpportunity) -> OpportunityResult:
        return await self._once(opportunity, OpportunityResult)

    async def set_field(self, change: FieldChange) -> FieldResult:
        slot = (change.account_id, change.field)
        result = await self._once(change, FieldResult, previous=self.fields.get(slot))
        if not result.duplicate:
            self.fields[slot] = change.value
        return result

    async def notify(self, notification: Notification) -> NotifyResult:
        return await self._once(notification, NotifyResult)

    async def webhook(self, call: WebhookCall) -> WebhookResult:
        return await self._once(call, WebhookResult, status_code=200)

    async def enable_trial(self, grant: TrialGrant) -> TrialResult:
        return await self._once(grant, TrialResult)
