"""Activities of the play workflow: every side effect and every look-up.

Each acting activity
1. resolves what the step needs from the account (recipient, assignee,
   amount, template values) through an `AccountSource`,
2. renders text (strict: a missing value fails, never "Hi ,"),
3. calls the connector with the step's idempotency key, which the workflow
   derived from play, account, plan hash, enrollment and step label (never
   the run id), so a retry, a replay or a reset acts at most once.

Connector errors become Temporal failures: `retryable=False` ->
non-retryable ApplicationError (the play fails loudly and can be reset once
the data is fixed); retryable -> an ordinary exception, retried by the
workflow's retry policy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from connectors import base as cb
from connectors.render import render
from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.evaluator import Account, EvalError, Evaluator
from workflows import conditions, schedule
from workflows.model import (
    ActResult,
    ConditionRequest,
    EmailRequest,
    NotifyRequest,
    OpportunityRequest,
    Schedule,
    ScheduleRequest,
    SetFieldRequest,
    StageRequest,
    StepContext,
    TaskRequest,
    TrialRequest,
    WebhookRequest,
)

T = TypeVar("T")


class Recipient(BaseModel):
    """A person an email goes to, as templates see it: {{ recipient.first_name }}."""

    address: str
    name: str | None = None
    first_name: str | None = None
    unsubscribed: bool = False


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


class StaticAccounts:
    """Accounts held in memory (tests, simulation): contact fields hold addresses."""

    def __init__(self, accounts: Mapping[str, Account], unsubscribed: frozenset[str] = frozenset(),
                 users: Mapping[str, Sender] | None = None) -> None:
        self.accounts = dict(accounts)
        self.unsubscribed = unsubscribed
        self.users = dict(users or {})

    async def snapshot(self, account_id: str) -> Account:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise cb.MissingDataError(f"no account {account_id!r}") from None

    async def recipient(self, account_id: str, contact: str) -> Recipient:
        return Recipient(address=contact, unsubscribed=contact in self.unsubscribed)

    async def user(self, user_id: str) -> Sender:
        return self.users.get(user_id, Sender(name=user_id))


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
                 *, unsubscribe_url: str | None = None) -> None:
        self.connectors = connectors
        self.accounts = accounts
        # Lets, scores and routes referenced by branch conditions and amounts;
        # field types, for showing values in templates.
        self.catalog = catalog or Catalog()
        # A format string with {key}, {account_id}, {play}, {contact}; None leaves
        # {{ unsubscribe_url }} undefined, so a template using it fails loudly.
        self.unsubscribe_url = unsubscribe_url

    # -- helpers -----------------------------------------------------------
    def _evaluator(self, account: Account, at: dt.datetime) -> Evaluator:
        return Evaluator(self.catalog, account, at.date())

    async def _value(self, ctx: StepContext, expr: n.Expr, what: str) -> Any:
        account = await self.accounts.snapshot(ctx.account_id)
        try:
            return self._evaluator(account, ctx.requested_at).eval_expr(expr)
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
        contact = {k: v for k, v in (person.model_dump(exclude={"unsubscribed"}) if person else {}).items()
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
    def _action(ctx: StepContext) -> dict[str, Any]:
        return {
            "key": ctx.key,
            "account_id": ctx.account_id,
            "actor": ctx.actor,
            "play": ctx.play,
            "step": ctx.step,
            "requested_at": ctx.requested_at,
        }

    @staticmethod
    async def _guard(call: Awaitable[T]) -> T:
        """Connector errors as Temporal sees them: permanent ones are non-retryable."""
        try:
            return await call
        except cb.ConnectorError as exc:
            if exc.retryable:
                raise  # an ordinary exception: retried by the activity retry policy
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from exc

    async def _act(self, call: Awaitable[cb.Result], summary: str) -> ActResult:
        result = await self._guard(call)
        return ActResult(duplicate=result.duplicate, external_id=result.external_id, summary=summary)

    # -- activities --------------------------------------------------------
    @activity.defn(name="send_email")
    async def send_email(self, req: EmailRequest) -> ActResult:
        contact = await self._guard(self._text(req.ctx, req.to, "email recipient"))
        person = await self._guard(self.accounts.recipient(req.ctx.account_id, contact))
        if person.unsubscribed:
            # Not a failure: the play goes on (its exit usually ends it at the
            # `unsubscribed` event); the email is simply never sent.
            return ActResult(skipped=f"{person.address} has unsubscribed", summary=f"email {req.template.name}")

        extra: dict[str, Any] = {"play_title": req.play_title}
        if req.sender is not None:
            owner = await self._guard(self._text(req.ctx, req.sender, "email sender (play owner)"))
            sender = await self._guard(self.accounts.user(owner))
            extra |= {"sender_name": sender.name, "sender_email": sender.email}
        if self.unsubscribe_url is not None:
            extra["unsubscribe_url"] = self.unsubscribe_url.format(
                key=req.ctx.key, account_id=req.ctx.account_id, play=req.ctx.play, contact=contact)

        async def build() -> cb.EmailResult:
            context = {**await self._template_context(req.ctx, person),
                       **{k: v for k, v in extra.items() if not _empty(v)}}
            subject = render(req.template.subject, context, what=f"template {req.template.name} (subject)")
            body = render(req.template.body, context, what=f"template {req.template.name} (body)")
            message = cb.EmailMessage(
                **self._action(req.ctx), to=person.address, subject=subject, body=body, template=req.template.name
            )
            return await self.connectors.email.send_email(message)

        return await self._act(build(), f"email {req.template.name} to {person.address}")

    @activity.defn(name="create_task")
    async def create_task(self, req: TaskRequest) -> ActResult:
        async def build() -> cb.TaskResult:
            assignee = await self._text(req.ctx, req.assignee, "task assignee")
            days_off = schedule.days_off(req.ctx.holidays, req.ctx.holiday_regions)
            due_at = (
                schedule.add_duration(req.ctx.requested_at, req.due, req.ctx.timezone, days_off)
                if req.due is not None
                else None
            )
            title = render(req.title, await self._template_context(req.ctx), what="task title")
            task = cb.NewTask(**self._action(req.ctx), assignee=assignee, title=title, due_at=due_at)
            return await self.connectors.tasks.create_task(task)

        return await self._act(build(), f"task {req.title!r}")

    @activity.defn(name="change_stage")
    async def change_stage(self, req: StageRequest) -> ActResult:
        change = cb.StageChange(**self._action(req.ctx), stage=req.stage)
        return await self._act(self.connectors.crm.change_stage(change), f"stage {req.stage!r}")

    @activity.defn(name="create_opportunity")
    async def create_opportunity(self, req: OpportunityRequest) -> ActResult:
        async def build() -> cb.OpportunityResult:
            amount = await self._value(req.ctx, req.amount, "opportunity amount") if req.amount else None
            if amount is not None and not isinstance(amount, (int, float)):
                raise cb.MissingDataError(f"opportunity amount is not a number: {amount!r}")
            owner = await self._text(req.ctx, req.owner, "opportunity owner") if req.owner else None
            opp = cb.NewOpportunity(**self._action(req.ctx), title=req.title, amount=amount, owner=owner)
            return await self.connectors.crm.create_opportunity(opp)

        return await self._act(build(), f"opportunity {req.title!r}")

    @activity.defn(name="notify")
    async def notify(self, req: NotifyRequest) -> ActResult:
        async def build() -> cb.NotifyResult:
            message = render(req.message, await self._template_context(req.ctx), what="notify message")
            note = cb.Notification(**self._action(req.ctx), channel=req.channel, message=message)
            return await self.connectors.notify.notify(note)

        return await self._act(build(), f"notify {req.channel}")

    @activity.defn(name="webhook")
    async def webhook(self, req: WebhookRequest) -> ActResult:
        payload = {
            "event": req.event,
            "play": req.ctx.play,
            "plan_hash": req.ctx.plan_hash,
            "account_id": req.ctx.account_id,
            "step": req.ctx.step,
            "idempotency_key": req.ctx.key,
        }
        call = cb.WebhookCall(**self._action(req.ctx), url=req.url, event=req.event, payload=payload)
        return await self._act(self.connectors.webhooks.webhook(call), f"webhook {req.url}")

    @activity.defn(name="set_field")
    async def set_field(self, req: SetFieldRequest) -> ActResult:
        async def build() -> cb.FieldResult:
            value = await self._value(req.ctx, req.value, f"set {req.field.dotted}")
            change = cb.FieldChange(**self._action(req.ctx), field=req.field.dotted, value=value)
            return await self.connectors.crm.set_field(change)

        return await self._act(build(), f"set {req.field.dotted}")

    @activity.defn(name="enable_trial")
    async def enable_trial(self, req: TrialRequest) -> ActResult:
        days_off = schedule.days_off(req.ctx.holidays, req.ctx.holiday_regions)
        ends_at = schedule.add_duration(req.ctx.requested_at, req.duration, req.ctx.timezone, days_off)
        grant = cb.TrialGrant(**self._action(req.ctx), feature=req.feature, ends_at=ends_at)
        return await self._act(self.connectors.product.enable_trial(grant), f"trial {req.feature}")

    @activity.defn(name="evaluate_condition")
    async def evaluate_condition(self, req: ConditionRequest) -> bool | None:
        """A branch or `unless` condition that reads account data: true, false or empty."""
        account = await self._guard(self.accounts.snapshot(req.account_id))
        try:
            return conditions.evaluate(req.expr, req.events, req.at.date(), account, self.catalog)
        except EvalError as exc:
            raise ApplicationError(
                f"cannot evaluate {conditions.describe(req.expr)}: {exc}", type="EvalError", non_retryable=True
            ) from exc

    def all(self) -> list[Any]:
        """Every activity of a worker (pass to `Worker(activities=...)`)."""
        return [
            compute_schedule,
            self.send_email,
            self.create_task,
            self.change_stage,
            self.create_opportunity,
            self.notify,
            self.webhook,
            self.set_field,
            self.enable_trial,
            self.evaluate_condition,
        ]


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
