"""Activities of the play workflow: every side effect and every look-up.

One activity, `act`, serves every acting step kind. It
1. turns the Plan's step into its connector action (connectors/base.py:
   the kind's `prepare`), which resolves what the step needs from the
   account (recipient, assignee, amount, template values) through an
   `AccountSource` and renders text (strict: a missing value fails, never
   "Hi ,"),
2. hands the action to the connector the settings chose for that kind,
   with the step's idempotency key, which the workflow derived from play,
   account, plan hash, enrollment and step label (never the run id), so a
   retry, a replay or a reset acts at most once.

The whole of `act` heartbeats every HEARTBEAT_EVERY seconds while it runs
(`heartbeating`), so connectors need no Temporal import: a worker killed
mid-send stops heartbeating and the server retries the attempt after the
workflow's heartbeat timeout (10 s), not after the 60 s start-to-close
timeout; a cancelled attempt cancels the connector's await.

Connector errors become Temporal failures: `retryable=False` ->
non-retryable ApplicationError (the play fails loudly and can be reset once
the data is fixed); retryable -> an ordinary exception, retried by the
workflow's retry policy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, SecretStr
from temporalio import activity
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from connectors import base as cb
from connectors import unsubscribe
from connectors.mail import format_unsubscribe_url
from connectors.render import render
from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.evaluator import Account, EvalError, Evaluator
from dsl.printer import format_expr
from workflows import conditions, schedule
from workflows.model import (
    LEGACY_ACTIVITIES,
    ActResult,
    ConditionRequest,
    EventKind,
    PlayEvent,
    Schedule,
    ScheduleRequest,
    StepContext,
    StepRequest,
)

T = TypeVar("T")
log = logging.getLogger("playbook.activities")
HEARTBEAT_EVERY = 2.0  # seconds; the SDK sends at most one per 0.8 x heartbeat timeout


async def heartbeating(call: Awaitable[T], every: float | None = None) -> T:
    """Await `call`, heartbeating every `every` seconds meanwhile; outside an activity just await it.

    Cancelling the activity (its heartbeat timed out, the worker shuts down)
    cancels `call` too."""
    if not activity.in_activity():
        return await call
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every or HEARTBEAT_EVERY)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        if not task.done():
            task.cancel()


class Recipient(BaseModel):
    """A person an email goes to, as templates see it: {{ recipient.first_name }}."""

    address: str
    name: str | None = None
    first_name: str | None = None
    unsubscribed: bool = False
    bounced: bool = False  # a mail server refused the address for good: skipped like an unsubscribe


class Sender(BaseModel):
    """The play's owner (a user), as templates see it: {{ sender_name }}."""

    name: str | None = None
    email: str | None = None


class AccountSource(Protocol):
    """Where activities read an account: the engine's store in production (workflows/accounts.py)."""

    async def snapshot(self, account_id: str) -> Account: ...

    async def recipient(self, account_id: str, contact: str) -> Recipient:
        """The person a contact field's value (a contact id, or an address) designates."""
        ...

    async def user(self, user_id: str) -> Sender:
        """One of our people (a user field's value): the sender of a play's emails."""
        ...

    async def record_bounce(self, address: str, at: dt.datetime) -> None:
        """A mail server refused `address` for good: every later send of every play skips it."""
        ...


class StaticAccounts:
    """Accounts held in memory (tests, simulation): contact fields hold addresses."""

    def __init__(self, accounts: Mapping[str, Account], unsubscribed: frozenset[str] = frozenset(),
                 users: Mapping[str, Sender] | None = None) -> None:
        self.accounts = dict(accounts)
        self.unsubscribed = unsubscribed
        self.users = dict(users or {})
        self.bounced: dict[str, dt.datetime] = {}  # address -> when it bounced

    async def snapshot(self, account_id: str) -> Account:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise cb.MissingDataError(f"no account {account_id!r}") from None

    async def recipient(self, account_id: str, contact: str) -> Recipient:
        return Recipient(address=contact, unsubscribed=contact in self.unsubscribed, bounced=contact in self.bounced)

    async def user(self, user_id: str) -> Sender:
        return self.users.get(user_id, Sender(name=user_id))

    async def record_bounce(self, address: str, at: dt.datetime) -> None:
        self.bounced.setdefault(address, at)


# ---------------------------------------------------------------------------
# Pure activities


@activity.defn(name="compute_schedule")
async def compute_schedule(request: ScheduleRequest) -> Schedule:
    """UTC instants of every step (run as a local activity: pure, and ZoneInfo works here)."""
    try:
        return schedule.compute(request)
    except schedule.ScheduleError as exc:
        raise ApplicationError(str(exc), type="ScheduleError", non_retryable=True) from exc


# ---------------------------------------------------------------------------
# Acting activities


class PlayActivities:
    def __init__(self, connectors: cb.Connectors, accounts: AccountSource, catalog: Catalog | None = None,
                 *, unsubscribe_url: str | None = None, unsubscribe_secret: SecretStr | None = None,
                 pipeline_queue: str | None = None) -> None:
        self.connectors = connectors
        # The task queue of the pipeline's SLA workflows (workflows/pipeline.py): set, a
        # deal a play opened or moved starts or signals its timer. None: no timers (tests, simulation).
        self.pipeline_queue = pipeline_queue
        self.accounts = accounts
        # Lets, scores and routes referenced by branch conditions and amounts;
        # field types, for showing values in templates.
        self.catalog = catalog or Catalog()
        # A format string with {key}, {account_id}, {play}, {contact} (values percent-encoded;
        # connectors/mail.py) and {token} (connectors/unsubscribe.py, signed with
        # `unsubscribe_secret`: the one-click link of `playbook serve`); None leaves
        # {{ unsubscribe_url }} undefined, so a template using it fails loudly.
        self.unsubscribe_url = unsubscribe_url
        self.unsubscribe_secret = unsubscribe_secret

    # -- helpers -----------------------------------------------------------
    async def _value(self, ctx: StepContext, expr: n.Expr, what: str) -> Any:
        account = await self.accounts.snapshot(ctx.account_id)
        try:
            return Evaluator(self.catalog, account, ctx.requested_at.date()).eval_expr(expr)
        except EvalError as exc:
            raise cb.MissingDataError(f"{what}: {exc}") from exc

    async def _text(self, ctx: StepContext, ref: n.Ref, what: str) -> str:
        """A contact or user field: an address or a user id; empty is an error."""
        value = await self._value(ctx, ref, what)
        if value is None or value == "":
            raise cb.MissingDataError(f"{what}: {ref.dotted} is empty for account {ctx.account_id}")
        return str(value)

    async def _template_context(self, ctx: StepContext, person: Recipient | None = None) -> dict[str, Any]:
        """Placeholders (docs/language.md#template): account and recipient fields, bare or
        qualified, shown by type (85%, 12,000, March 9, 2026). Empty values are left out,
        so StrictUndefined fails the step instead of sending "Hi ,"."""
        account = await self.accounts.snapshot(ctx.account_id)
        fields = {k: show(v, self._field_type(k)) for k, v in account.fields.items() if not _empty(v)}
        contact = {k: v for k, v in (person.model_dump(exclude={"unsubscribed", "bounced"}) if person else {}).items()
                   if not _empty(v)}
        if "address" in contact:
            contact["email"] = contact.pop("address")
        # Bare names: the recipient's fields win (an email is written to a person).
        return {**fields, **contact, "account": fields, "contact": contact, "recipient": contact,
                "play": ctx.play, "step": ctx.step}

    def _field_type(self, name: str) -> n.TypeName | None:
        decl = self.catalog.entity_field("account", name) if self.catalog.account else None
        return decl.type.name if decl else None

    @staticmethod
    async def _guard(call: Awaitable[T]) -> T:
        """Connector errors as Temporal sees them: permanent ones are non-retryable."""
        try:
            return await call
        except cb.ConnectorError as exc:
            if isinstance(exc, cb.TransientError) and exc.retry_after is not None:
                # The provider's Retry-After replaces the policy's backoff for this one attempt.
                raise ApplicationError(str(exc), type=type(exc).__name__,
                                       next_retry_delay=dt.timedelta(seconds=max(exc.retry_after, 0.0))) from exc
            if exc.retryable:
                raise  # an ordinary exception: retried by the activity retry policy
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from exc

    # -- activities --------------------------------------------------------
    @activity.defn(name="act")
    async def act(self, req: StepRequest) -> ActResult:
        """Any acting step: prepared into its connector action, then done by the kind's connector."""
        return await heartbeating(self._act(req))

    async def _act(self, req: StepRequest) -> ActResult:
        kind = cb.ACTIONS.get(req.action.step)
        if kind is None:
            raise ApplicationError(f"step {req.ctx.step}: no connector action for step kind {req.action.step!r}",
                                   type="PlanError", non_retryable=True)
        try:
            action = await self._guard(kind.prepare(req.action, _StepResolver(self, req)))
        except cb.Skipped as skip:
            return ActResult(skipped=skip.reason, summary=skip.summary)
        done = await self._guard(self._deliver(req.ctx, action))
        if isinstance(done, cb.Bounced):
            return ActResult(skipped=str(done), summary=action.summary())
        if self.pipeline_queue is not None:
            await self._tell_pipeline(action, done)
        return ActResult(duplicate=done.duplicate, external_id=done.external_id, summary=action.summary())

    async def _deliver(self, ctx: StepContext, action: cb.Action) -> cb.Result | cb.Bounced:
        """The connector's result, or the hard bounce it reported, once the play and the store know of it.

        A bounce is no failed play: the address is dead, the step is skipped.
        The play is told first (its `bounced` event, deduplicated by the key),
        then the store; if either fails the attempt is retried, and the retry
        finds the address refused again, or already recorded (then `prepare`
        skips it).
        """
        try:
            return await self.connectors.act(action)
        except cb.Bounced as bounce:
            await self._tell_play(ctx, bounce)
            await self.accounts.record_bounce(bounce.recipient, ctx.requested_at)
            return bounce

    async def _tell_play(self, ctx: StepContext, bounce: cb.Bounced) -> None:
        from workflows.client import send_event  # workflows.client imports the workflow, which imports us

        try:
            client = activity.client()
        except RuntimeError:  # not in a worker (a test's bare ActivityEnvironment): nobody to tell
            log.warning("step %s: %s; no Temporal client to signal play %s", ctx.step, bounce, ctx.play)
            return
        event = PlayEvent(kind=EventKind.BOUNCED, id=f"bounced:{ctx.key}", at=ctx.requested_at, source="act")
        if not await send_event(client, ctx.play, ctx.account_id, event):
            log.warning("step %s: %s; play %s of %s is not running", ctx.step, bounce, ctx.play, ctx.account_id)

    async def _tell_pipeline(self, action: cb.Action, result: cb.Result) -> None:
        """A deal opened or moved: signal-with-start its SLA timer. Also on a duplicate (the
        attempt that acted may have died before signalling); the timer re-reads the store, so
        a repeated signal changes nothing. A failure here retries the activity, which the
        idempotency key keeps from acting twice."""
        if not isinstance(result, (cb.StageResult, cb.OpportunityResult)) or result.external_id is None:
            return
        if isinstance(result, cb.StageResult) and result.previous == result.stage:
            return  # the deal was already there: nothing moved
        from workflows.pipeline import signal
        from workflows.pipeline_model import StageSignal

        stage = result.stage if isinstance(result, cb.StageResult) else None
        await signal(activity.client(), result.external_id,
                     StageSignal(stage=stage, at=action.requested_at, actor=action.actor),
                     task_queue=self.pipeline_queue or "")

    @activity.defn(dynamic=True)
    async def legacy_act(self, args: Sequence[RawValue]) -> ActResult:
        """The per-kind activities (send_email, create_task, ...) that plays started before
        patch ONE_ACT_ACTIVITY still schedule: the same work as `act`, either request shape."""
        name = activity.info().activity_type
        if name not in LEGACY_ACTIVITIES.values() or len(args) != 1:
            # Not ours: fail this attempt (retried) as an unregistered activity would.
            raise ApplicationError(f"activity {name!r} is not registered on this worker", type="NotFoundError")
        payload = activity.payload_converter().from_payload(args[0].payload, dict)
        return await self.act(StepRequest.from_activity(name, payload))

    @activity.defn(name="evaluate_condition")
    async def evaluate_condition(self, req: ConditionRequest) -> bool | None:
        """A branch or `unless` condition that reads account data: true, false or empty."""
        account = await self._guard(self.accounts.snapshot(req.account_id))
        try:
            return conditions.evaluate(req.expr, req.events, req.at.date(), account, self.catalog)
        except EvalError as exc:
            raise ApplicationError(
                f"cannot evaluate {format_expr(req.expr)}: {exc}", type="EvalError", non_retryable=True
            ) from exc

    def all(self) -> list[Any]:
        """Every activity of a worker (pass to `Worker(activities=...)`)."""
        return [compute_schedule, self.act, self.legacy_act, self.evaluate_condition]


class _StepResolver:
    """What an action's `prepare` reads (connectors/base.py `Resolver`), for one step."""

    def __init__(self, acts: PlayActivities, req: StepRequest) -> None:
        self.acts, self.req, self.ctx = acts, req, req.ctx
        c = req.ctx
        self.base: dict[str, Any] = {"key": c.key, "account_id": c.account_id, "actor": c.actor, "play": c.play,
                                     "step": c.step, "requested_at": c.requested_at}
        self.plan_hash = c.plan_hash
        self._contacts: dict[str, str] = {}  # address -> the contact field's value (an id or an address)

    async def value(self, expr: n.Expr, what: str) -> Any:
        return await self.acts._value(self.ctx, expr, what)

    async def text(self, ref: n.Ref, what: str) -> str:
        return await self.acts._text(self.ctx, ref, what)

    async def recipient(self, ref: n.Ref, what: str) -> Recipient:
        contact = await self.text(ref, what)
        person = await self.acts.accounts.recipient(self.ctx.account_id, contact)
        self._contacts[person.address] = contact
        return person

    async def owner(self, what: str) -> str | None:
        return await self.text(self.req.sender, what) if self.req.sender is not None else None

    def template(self, name: str) -> tuple[str, str]:
        tpl = self.req.templates.get(name)
        if tpl is None:
            raise cb.PermanentError(f"template {name!r} is not in the request")
        return tpl.subject, tpl.body

    async def render(self, text: str, what: str, to: cb.Person | None = None) -> str:
        extra: dict[str, Any] = {}
        if to is not None:  # a message to a person: signed by the play's owner
            extra["play_title"] = self.req.play_title
            if self.req.sender is not None:
                owner = await self.text(self.req.sender, "email sender (play owner)")
                sender = await self.acts.accounts.user(owner)
                extra |= {"sender_name": sender.name, "sender_email": sender.email}
            extra["unsubscribe_url"] = self.unsubscribe_url(to)
        person = to if isinstance(to, Recipient) else None
        context = {**await self.acts._template_context(self.ctx, person),
                   **{k: v for k, v in extra.items() if not _empty(v)}}
        return render(text, context, what=what)

    def unsubscribe_url(self, to: cb.Person) -> str | None:
        if self.acts.unsubscribe_url is None:
            return None
        contact = self._contacts.get(to.address, to.address)
        values = {"key": self.ctx.key, "account_id": self.ctx.account_id, "play": self.ctx.play, "contact": contact}
        if self.acts.unsubscribe_secret is not None:  # {token}: only the holder of the secret can make a link
            values["token"] = unsubscribe.token(self.acts.unsubscribe_secret, contact, self.ctx.account_id,
                                                self.ctx.play)
        return format_unsubscribe_url(self.acts.unsubscribe_url, **values)

    def after(self, duration: n.Duration) -> dt.datetime:
        days_off = schedule.days_off(self.ctx.holidays, self.ctx.holiday_regions)
        return schedule.add_duration(self.ctx.requested_at, duration, self.ctx.timezone, days_off)


def _empty(value: Any) -> bool:
    return value is None or value == ""


def show(value: Any, kind: n.TypeName | None) -> Any:
    """A field value as a reader expects it in an email."""
    if kind is n.TypeName.PERCENT and isinstance(value, (int, float)):
        return f"{value * 100:.0f}%"
    if kind is n.TypeName.MONEY and isinstance(value, (int, float)):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    if isinstance(value, dt.datetime):
        return f"{value:%B} {value.day}, {value.year}"
    if isinstance(value, dt.date):
        return f"{value:%B} {value.day}, {value.year}"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
