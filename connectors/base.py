"""The interface every outbound connector implements.

A connector acts on the actions of one or more step kinds: email over SMTP,
tasks and stages in HubSpot, notifications in Slack, the rest in the
built-in store. Which connector serves which kind is a setting
(connectors/settings.py); `Connectors` holds that choice.

Contract of `act`:

- Actions carry an idempotency `key`. A second call with a key already
  used must NOT act again: it returns the first call's result with
  `duplicate=True`. The built-in store enforces this with a UNIQUE key;
  providers without native idempotency record the key (the outbox) before
  acting.
- Content is final: templates are rendered and account values resolved
  before a connector is called (each action's `prepare`, run by
  workflows/activities.py), so a connector only delivers.
- Failures raise a `ConnectorError` whose `retryable` says whether trying
  again can help (like httpx's timeout vs. 4xx split): a timeout, a 5xx, a
  429, a locked database are `TransientError` (with `retry_after` when the
  provider named a delay); a rejected address, a
  missing value, a 4xx are `PermanentError`; a recipient's server refusing
  the address for good (SMTP 5xx at RCPT) is `Bounced`, which the activity
  turns into a skipped step, a bounced contact and a `bounced` event. Never
  a bare exception: the activity layer maps these onto Temporal's retry policy.
- Async; a blocking client runs in a thread (asyncio.to_thread). A call
  may take long: the `act` activity heartbeats while it awaits it
  (workflows/activities.py `heartbeating`), so a connector imports nothing
  of Temporal; it must only let itself be cancelled (an attempt whose
  worker was declared dead is retried elsewhere).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from pydantic import BaseModel

from dsl import nodes as n

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
    """Timeouts, 5xx, 429, connection resets, a locked database: retry with backoff.

    `retry_after`: the provider said when to come back (a Retry-After header);
    the next attempt waits that long instead of the retry policy's backoff.
    """

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """The request itself is wrong (bad address, 4xx, missing data): retrying cannot help."""

    retryable = False


class Bounced(PermanentError):
    """The recipient's mail server refused the address for good (5xx at RCPT: a hard bounce).

    Not a failed play: the `act` activity records the contact as bounced (every
    later send of every play skips it), tells the play (`bounced` event) and
    ends the step as skipped.
    """

    def __init__(self, recipient: str, code: int, reply: str) -> None:
        super().__init__(f"{recipient} bounced: {code} {reply}".strip())
        self.recipient, self.code, self.reply = recipient, code, reply


class RenderError(PermanentError):
    """A template refers to a value the account does not have, or does not parse."""


class MissingDataError(PermanentError):
    """A recipient, assignee or amount resolved to nothing."""


# ---------------------------------------------------------------------------
# Actions (what to do) and results (what was done)
#
# One action class per acting step kind (dsl/steps.py), registered under the
# kind's name in ACTIONS. `prepare` turns the Plan's step into the action,
# reading the account through a `Resolver` (workflows/activities.py), so the
# workflow passes the step itself and one activity serves every kind.


class Skipped(Exception):  # noqa: N818 - a decision, not an error
    """The step is deliberately not done (the recipient unsubscribed): the play goes on."""

    def __init__(self, summary: str, reason: str) -> None:
        super().__init__(f"{summary}: {reason}")
        self.summary, self.reason = summary, reason


@runtime_checkable
class Person(Protocol):
    address: str
    unsubscribed: bool
    bounced: bool  # a mail server refused the address for good


class Resolver(Protocol):
    """What `prepare` may read: the step's account, rendered text and calendar."""

    base: dict[str, Any]  # the Action fields every action shares (key, account_id, actor, ...)
    plan_hash: str

    async def value(self, expr: n.Expr, what: str) -> Any:
        """An expression over the account (MissingDataError when it cannot be evaluated)."""
        ...

    async def text(self, ref: n.Ref, what: str) -> str:
        """A contact or user field's value; empty is a MissingDataError."""
        ...

    async def recipient(self, ref: n.Ref, what: str) -> Person:
        """The person a contact field designates."""
        ...

    async def owner(self, what: str) -> str | None:
        """The play owner's user id (its `owner` field's value); None when the play has no owner."""
        ...

    def template(self, name: str) -> tuple[str, str]:
        """(subject, body) of a template the Plan carries."""
        ...

    def unsubscribe_url(self, to: Person) -> str | None:
        """The link that unsubscribes `to` from this play's messages (None: not configured)."""
        ...

    async def render(self, text: str, what: str, to: Person | None = None) -> str:
        """Template text with the account's values; a message `to` a person also gets the
        sender, play title and unsubscribe link."""
        ...

    def after(self, duration: n.Duration) -> dt.datetime:
        """The step's time plus `duration` on the play's calendar (business days too)."""
        ...


ACTIONS: dict[str, type[Action]] = {}  # step kind -> its action


class Action(BaseModel):
    kind: ClassVar[str]  # the step kind it serves; set on the concrete classes
    result: ClassVar[type[Result]]

    key: str  # idempotency key: play:<play>:<account>:<plan hash>:<enrollment>:<step>
    account_id: str
    actor: str  # who acts: "play:usage_limit"
    play: str
    step: str
    requested_at: dt.datetime  # workflow time of the step, not the connector's clock

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            ACTIONS[cls.kind] = cls

    @classmethod
    async def prepare(cls, step: Any, r: Resolver) -> Self:
        """The action a Plan step asks for, resolved against the account."""
        raise NotImplementedError

    def summary(self) -> str:
        """A few words for the decision log."""
        return self.kind


class OutboxMessage(Action):
    """A message on a channel (the kind's name): the built-in store keeps it in its outbox."""

    def outbox(self) -> tuple[str, str | None, str]:
        """(recipient, subject, body) of its outbox row."""
        raise NotImplementedError


class Result(BaseModel):
    key: str
    duplicate: bool = False  # the key had been used; nothing was done by this call
    external_id: str | None = None  # the provider's id: outbox row, task id, message id


Action.result = Result


class EmailResult(Result):
    pass


class EmailMessage(OutboxMessage):
    kind = "email"
    result = EmailResult
    to: str
    subject: str
    body: str
    template: str
    # For the List-Unsubscribe headers (connectors/mail.py); the body has it as {{ unsubscribe_url }}.
    unsubscribe_url: str | None = None
    # Extra headers for the sender to add (sandbox mode's X-Playbook-Original-To), checked like any header.
    headers: dict[str, str] = {}

    @classmethod
    async def prepare(cls, step: n.EmailStep, r: Resolver) -> Self:
        person = await r.recipient(step.to, "email recipient")
        if person.unsubscribed:
            # Not a failure: the play goes on (its exit usually ends it at the
            # `unsubscribed` event); the email is simply never sent.
            raise Skipped(f"email {step.template}", f"{person.address} has unsubscribed")
        if person.bounced:
            raise Skipped(f"email {step.template}", f"{person.address} bounced earlier (a mail server refused it)")
        subject, body = r.template(step.template)
        what = f"template {step.template}"
        return cls(**r.base, to=person.address, template=step.template,
                   subject=await r.render(subject, f"{what} (subject)", to=person),
                   body=await r.render(body, f"{what} (body)", to=person),
                   unsubscribe_url=r.unsubscribe_url(person))

    def summary(self) -> str:
        return f"email {self.template} to {self.to}"

    def outbox(self) -> tuple[str, str | None, str]:
        return self.to, self.subject, self.body


class TaskResult(Result):
    pass


class NewTask(Action):
    kind = "task"
    result = TaskResult
    assignee: str
    title: str
    due_at: dt.datetime | None = None

    @classmethod
    async def prepare(cls, step: n.TaskStep, r: Resolver) -> Self:
        assignee = await r.text(step.assignee, "task assignee")
        due_at = r.after(step.due) if step.due is not None else None
        return cls(**r.base, assignee=assignee, title=await r.render(step.title, "task title"), due_at=due_at)

    def summary(self) -> str:
        return f"task {self.title!r}"


class StageResult(Result):
    previous: str | None = None
    stage: str = ""


class StageChange(Action):
    kind = "stage"
    result = StageResult
    stage: str

    @classmethod
    async def prepare(cls, step: n.StageStep, r: Resolver) -> Self:
        return cls(**r.base, stage=step.stage)

    def summary(self) -> str:
        return f"stage {self.stage!r}"


class OpportunityResult(Result):
    pass


class NewOpportunity(Action):
    kind = "opportunity"
    result = OpportunityResult
    title: str
    amount: float | None = None
    owner: str | None = None

    @classmethod
    async def prepare(cls, step: n.OpportunityStep, r: Resolver) -> Self:
        amount = await r.value(step.amount, "opportunity amount") if step.amount else None
        if amount is not None and not isinstance(amount, (int, float)):
            raise MissingDataError(f"opportunity amount is not a number: {amount!r}")
        owner = await r.text(step.owner, "opportunity owner") if step.owner else None
        return cls(**r.base, title=step.title, amount=amount, owner=owner)

    def summary(self) -> str:
        return f"opportunity {self.title!r}"


class NotifyResult(Result):
    pass


OWNER_CHANNEL = n.NOTIFY_OWNER  # notify "@owner": the play owner's channel
ROUTE_CHANNEL = n.NOTIFY_ROUTE  # notify "@route.touch": the channel of the account's target of route `touch`


class Notification(OutboxMessage):
    """A message to a channel: a literal one (`#cs-expansion`), or `@owner` / `@route.NAME`,
    which a chat connector maps to a channel by the owner or route target resolved here."""

    kind = "notify"
    result = NotifyResult
    channel: str
    message: str
    owner: str | None = None  # the play owner's user id, for `@owner`
    route: str | None = None  # the account's target of the route, for `@route.NAME`

    @classmethod
    async def prepare(cls, step: n.NotifyStep, r: Resolver) -> Self:
        owner = route = None
        if step.channel == OWNER_CHANNEL:
            owner = await r.owner(f"notify {OWNER_CHANNEL} (play owner)")
        elif step.channel.startswith(ROUTE_CHANNEL):
            name = step.channel.removeprefix(ROUTE_CHANNEL)
            target = await r.value(n.Ref(path=["route", name]), f"notify {step.channel}")
            route = None if target is None else str(target)
        return cls(**r.base, channel=step.channel, owner=owner, route=route,
                   message=await r.render(step.message, "notify message"))

    def summary(self) -> str:
        return f"notify {self.channel}"

    def outbox(self) -> tuple[str, str | None, str]:
        return self.channel, None, self.message


class WebhookResult(Result):
    status_code: int | None = None


class WebhookCall(OutboxMessage):
    kind = "webhook"
    result = WebhookResult
    url: str
    event: str | None = None
    payload: dict[str, Any] = {}

    @classmethod
    async def prepare(cls, step: n.WebhookStep, r: Resolver) -> Self:
        b = r.base
        payload = {"event": step.event, "play": b["play"], "plan_hash": r.plan_hash, "account_id": b["account_id"],
                   "step": b["step"], "idempotency_key": b["key"]}
        return cls(**b, url=step.url, event=step.event, payload=payload)

    def summary(self) -> str:
        return f"webhook {self.url}"

    def outbox(self) -> tuple[str, str | None, str]:
        return self.url, self.event, json.dumps(self.payload, sort_keys=True, default=str)


class FieldResult(Result):
    previous: Any = None


class FieldChange(Action):
    kind = "set"
    result = FieldResult
    field: str  # dotted: account.flag
    value: Any

    @classmethod
    async def prepare(cls, step: n.SetStep, r: Resolver) -> Self:
        return cls(**r.base, field=step.field.dotted, value=await r.value(step.value, f"set {step.field.dotted}"))

    def summary(self) -> str:
        return f"set {self.field}"


class TrialResult(Result):
    pass


class TrialGrant(Action):
    kind = "trial"
    result = TrialResult
    feature: str
    ends_at: dt.datetime

    @classmethod
    async def prepare(cls, step: n.TrialStep, r: Resolver) -> Self:
        return cls(**r.base, feature=step.feature, ends_at=r.after(step.duration))

    def summary(self) -> str:
        return f"trial {self.feature}"


# ---------------------------------------------------------------------------
# Connectors


@runtime_checkable
class Connector(Protocol):
    """Acts on one or more step kinds' actions; a key already used returns the first result, duplicate."""

    async def act(self, action: Action) -> Result: ...


class Connectors:
    """Which connector serves each acting step kind (chosen by settings: connectors/settings.py)."""

    def __init__(self, by_kind: Mapping[str, Connector]) -> None:
        self.by_kind = dict(by_kind)

    @classmethod
    def single(cls, connector: Connector) -> Connectors:
        """One connector for every kind (the built-in store, tests)."""
        return cls({kind: connector for kind in ACTIONS})

    async def act(self, action: Action) -> Result:
        connector = self.by_kind.get(action.kind)
        if connector is None:
            raise PermanentError(f"no connector serves step kind {action.kind!r}")
        return await connector.act(action)
