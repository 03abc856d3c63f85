"""The interface every outbound connector implements.

One Protocol per capability, so a deployment can mix providers: email over
SMTP, tasks and stages in HubSpot, notifications in Slack, the rest in the
built-in store. `Connectors` bundles one implementation per capability.

Contract for every method:

- Requests carry an idempotency `key`. A second call with a key already
  used must NOT act again: it returns the first call's result with
  `duplicate=True`. The built-in store enforces this with a UNIQUE key;
  providers without native idempotency record the key (the outbox) before
  acting.
- Content is final: templates are rendered and account values resolved
  before a connector is called (see workflows/activities.py), so a
  connector only delivers.
- Failures raise a `ConnectorError` whose `retryable` says whether trying
  again can help (like httpx's timeout vs. 4xx split): a timeout, a 5xx, a
  429, a locked database are `TransientError`; a rejected address, a
  missing value, a 4xx are `PermanentError`. Never a bare exception: the
  activity layer maps these onto Temporal's retry policy.
- Methods are async; a blocking client runs in a thread (asyncio.to_thread).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

# ---------------------------------------------------------------------------
# Errors


class ConnectorError(Exception):
    """A connector could not act. `retryable`: could the same call succeed later?"""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class TransientError(ConnectorError):
    """Timeouts, 5xx, 429, connection resets, a locked database: retry with backoff."""

    retryable = True


class PermanentError(ConnectorError):
    """The request itself is wrong (bad address, 4xx, missing data): retrying cannot help."""

    retryable = False


class RenderError(PermanentError):
    """A template refers to a value the account does not have, or does not parse."""


class MissingDataError(PermanentError):
    """A recipient, assignee or amount resolved to nothing."""


# ---------------------------------------------------------------------------
# Requests (what to do) and results (what was done)


class Action(BaseModel):
    key: str  # idempotency key: play:<play>:<account>:<plan hash>:<enrollment>:<step>
    account_id: str
    actor: str  # who acts: "play:usage_limit"
    play: str
    step: str
    requested_at: dt.datetime  # workflow time of the step, not the connector's clock


class EmailMessage(Action):
    to: str
    subject: str
    body: str
    template: str


class NewTask(Action):
    assignee: str
    title: str
    due_at: dt.datetime | None = None


class StageChange(Action):
    stage: str


class NewOpportunity(Action):
    title: str
    amount: float | None = None
    owner: str | None = None


class Notification(Action):
    channel: str
    message: str


class WebhookCall(Action):
    url: str
    event: str | None = None
    payload: dict[str, Any] = {}


class FieldChange(Action):
    field: str  # dotted: account.flag
    value: Any


class TrialGrant(Action):
    feature: str
    ends_at: dt.datetime


class Result(BaseModel):
    key: str
    duplicate: bool = False  # the key had been used; nothing was done by this call
    external_id: str | None = None  # the provider's id: outbox row, task id, message id


class EmailResult(Result):
    pass


class TaskResult(Result):
    pass


class StageResult(Result):
    previous: str | None = None
    stage: str = ""


class OpportunityResult(Result):
    pass


class NotifyResult(Result):
    pass


class WebhookResult(Result):
    status_code: int | None = None


class FieldResult(Result):
    previous: Any = None


class TrialResult(Result):
    pass


# ---------------------------------------------------------------------------
# Capabilities


@runtime_checkable
class EmailConnector(Protocol):
    async def send_email(self, message: EmailMessage) -> EmailResult: ...


@runtime_checkable
class TaskConnector(Protocol):
    async def create_task(self, task: NewTask) -> TaskResult: ...


@runtime_checkable
class CrmConnector(Protocol):
    async def change_stage(self, change: StageChange) -> StageResult: ...

    async def create_opportunity(self, opportunity: NewOpportunity) -> OpportunityResult: ...

    async def set_field(self, change: FieldChange) -> FieldResult: ...


@runtime_checkable
class NotifyConnector(Protocol):
    async def notify(self, notification: Notification) -> NotifyResult: ...


@runtime_checkable
class WebhookConnector(Protocol):
    async def webhook(self, call: WebhookCall) -> WebhookResult: ...


@runtime_checkable
class ProductConnector(Protocol):
    async def enable_trial(self, grant: TrialGrant) -> TrialResult: ...


@dataclass(frozen=True)
class Connectors:
    """One implementation per capability; `single()` when one object does everything."""

    email: EmailConnector
    tasks: TaskConnector
    crm: CrmConnector
    notify: NotifyConnector
    webhooks: WebhookConnector
    product: ProductConnector

    @classmethod
    def single(cls, connector: Any) -> Connectors:
        return cls(connector, connector, connector, connector, connector, connector)
