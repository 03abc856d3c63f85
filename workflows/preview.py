"""A message as a play would send it, without sending it (`playbook render`).

The same path as a running play: the email step of a compiled Plan becomes
the `act` activity's request, the `EmailMessage` action's `prepare` resolves
and renders it through the activity's `_StepResolver` (account values,
recipient, sender, play title, unsubscribe link), and connectors/mail.py
builds the headers an email connector would send. Only the idempotency key
is a preview's own (`...:preview:<step>`), so the Message-ID differs from the
real send's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage

from connectors import base as cb
from connectors import mail
from dsl import nodes as n
from dsl import steps as step_kinds
from dsl.plan import Plan, PlanTemplate
from workflows.activities import PlayActivities, Recipient, _StepResolver
from workflows.model import StepContext, StepRequest
from workflows.play import idempotency_key

PREVIEW_ENROLLMENT = "preview"


class PreviewError(Exception):
    """The template, play or step to preview cannot be found."""


@dataclass(frozen=True)
class Preview:
    template: str
    play: str | None  # None: no play uses the template (rendered without one)
    step: str | None
    account_id: str
    action: cb.EmailMessage | None  # None: the send would be skipped
    skipped: str | None  # why it would not be sent (unsubscribed, bounced)
    message: MimeMessage | None


@dataclass(frozen=True)
class Use:
    """Where a play sends a template: (plan, action path, the email step)."""

    plan: Plan
    path: str
    step: n.EmailStep


def uses(plans: list[Plan], template: str) -> list[Use]:
    """Every email step of every play that sends `template`, in play then step order."""
    return [Use(plan, visit.path, visit.action) for plan in sorted(plans, key=lambda p: p.play)
            for visit in step_kinds.walk_steps(plan.steps)
            if isinstance(visit.action, n.EmailStep) and visit.action.template == template]


class _ToContact(_StepResolver):
    """The activity's resolver, with the recipient given on the command line instead of the step's."""

    def __init__(self, acts: PlayActivities, req: StepRequest, contact: str) -> None:
        super().__init__(acts, req)
        self.contact = contact

    async def recipient(self, ref: n.Ref, what: str) -> Recipient:
        person = await self.acts.accounts.recipient(self.ctx.account_id, self.contact)
        self._contacts[person.address] = self.contact
        return person


async def preview(acts: PlayActivities, use: Use | None, template: PlanTemplate, account_id: str, *,
                  contact: str | None, at: dt.datetime, mail_settings: mail.MailSettings,
                  rewrite: Callable[[cb.EmailMessage], cb.Action] | None = None) -> Preview:
    """The message `use` (a play's email step; None: the template alone, to `contact`) would send
    to `account_id` now. Raises the errors a send would (RenderError names the missing value).

    `rewrite`: what happens to the action between the activity and the connector (sandbox mode's
    connectors/sandbox.py `rewrite`), so the preview is what the connector would get."""
    if use is None:
        if contact is None:
            raise PreviewError(f"no play sends template {template.name!r}: give the recipient with --contact")
        plan_hash, play, path, step = "", "", "render", n.EmailStep(to=n.Ref(path=["contact"]), template=template.name)
        title, sender, holidays, regions = "", None, [], []
    else:
        plan_hash, play, path, step = use.plan.hash, use.plan.play, use.path, use.step
        title, sender, holidays, regions = (use.plan.title, use.plan.owner, use.plan.holidays,
                                            use.plan.holiday_regions)
    key = (idempotency_key(use.plan, account_id, PREVIEW_ENROLLMENT, path) if use is not None
           else f"render:{template.name}:{account_id}")
    ctx = StepContext(key=key, play=play, plan_hash=plan_hash, account_id=account_id, step=path, requested_at=at,
                      holidays=holidays, holiday_regions=regions)
    req = StepRequest(ctx=ctx, action=step, templates={template.name: template}, sender=sender, play_title=title)
    resolver = _ToContact(acts, req, contact) if contact is not None else _StepResolver(acts, req)
    await acts.accounts.snapshot(account_id)  # an unknown account is said as such, before any field
    try:
        action = await cb.EmailMessage.prepare(step, resolver)
    except cb.Skipped as skip:
        return Preview(template.name, play or None, path if use else None, account_id, None, skip.reason, None)
    if rewrite is not None:
        rewritten = rewrite(action)
        assert isinstance(rewritten, cb.EmailMessage)
        action = rewritten
    sender_address = mail_settings.from_address or "not-set@example.invalid"
    settings = mail_settings if mail_settings.from_address else mail_settings.model_copy(
        update={"from_address": sender_address, "message_id_domain": mail_settings.message_id_domain or "example.invalid"})
    message = mail.build(action, settings, sender=sender_address)
    return Preview(template.name, play or None, path if use else None, account_id, action, None, message)


__all__ = ["PREVIEW_ENROLLMENT", "Preview", "PreviewError", "Use", "preview", "uses"]
