"""The simulated customer: deterministic reactions to the emails plays send.

A reply some hours later, an unsubscribe, a bounce, later a deal won or
lost. Every random choice is a hash of (seed, the email's idempotency key,
what is drawn), not a draw from a shared generator, so it does not depend
on the order concurrent activities finish in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from workflows.sim_model import SimConfig


def draw(seed: int, *parts: object) -> float:
    """A uniform number in [0, 1) fixed by (seed, parts): order-independent randomness."""
    h = hashlib.blake2b("|".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


@dataclass
class Email:
    """An email as the customer reads it."""

    idempotency_key: str
    account_id: str
    play: str
    recipient: str
    subject: str | None
    created_at: dt.datetime


@dataclass(order=True)
class Pending:
    due: dt.datetime
    account: str
    play: str
    kind: str
    stage: str | None = field(default=None, compare=False)
    cause: str = field(default="", compare=False)  # why (the email it answers), for the timeline
    contact: str | None = field(default=None, compare=False)
    message: str | None = field(default=None, compare=False)  # the outbox key a reply answers


class Customer:
    """Deterministic reactions to emails (all choices hashed from the seed and the email's key)."""

    def __init__(self, config: SimConfig) -> None:
        self.c = config
        self.replied: set[tuple[str, str, str]] = set()  # (account, play, enrollment) that will reply

    def react(self, email: Email, next_tick: Callable[[dt.datetime], dt.datetime]) -> list[Pending]:
        c, key = self.c, email.idempotency_key
        enrollment = key.split(":")[4] if key.count(":") >= 5 else ""
        subject = email.subject or "(no subject)"
        out: list[Pending] = []
        at = email.created_at
        if draw(c.seed, key, "bounce") < c.bounce_rate:
            return [Pending(next_tick(at + dt.timedelta(minutes=5)), email.account_id, email.play, "bounced",
                            cause=f"“{subject}” bounced", contact=email.recipient)]
        if draw(c.seed, key, "unsubscribe") < c.unsubscribe_rate:
            hours = 1 + int(draw(c.seed, key, "unsubscribe-delay") * 24)
            return [Pending(next_tick(at + dt.timedelta(hours=hours)), email.account_id, email.play,
                            "unsubscribed", cause=f"after “{subject}”", contact=email.recipient)]
        thread = (email.account_id, email.play, enrollment)
        if thread in self.replied or draw(c.seed, key, "reply") >= c.reply_rate:
            return out
        self.replied.add(thread)
        lo, hi = c.reply_hours
        reply_at = next_tick(at + dt.timedelta(hours=lo + int(draw(c.seed, key, "reply-delay") * (hi - lo + 1))))
        out.append(Pending(reply_at, email.account_id, email.play, "replied", cause=f"to “{subject}”",
                           contact=email.recipient, message=key))
        deal = draw(c.seed, key, "deal")
        if deal < c.win_rate:
            days = 3 + int(draw(c.seed, key, "won-delay") * 8)
            out.append(Pending(next_tick(reply_at + dt.timedelta(days=days)), email.account_id, email.play,
                               "closed_won", stage="Closed Won", cause="deal signed"))
        elif deal < c.win_rate + c.loss_rate:
            days = 2 + int(draw(c.seed, key, "lost-delay") * 6)
            out.append(Pending(next_tick(reply_at + dt.timedelta(days=days)), email.account_id, email.play,
                               "closed_lost", stage="Closed Lost", cause="not now, they said"))
        return out

