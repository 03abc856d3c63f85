"""Inbound events: map to an account, record in the store, then signal the running plays.

    inbound = Inbound(store, connect=lambda: connect(temporal_settings))
    recorded = await inbound.accept(incoming)     # stored (or found: a redelivery), never lost
    await inbound.deliver()                       # pending events -> `event` signals

The order is the point: an event is stored before any play hears of it, with
its pending-signal marker (`inbound_events.signal_state = 'pending'`).
`deliver` signals every play the account is running (engine enrollment rows;
only the answered play for a reply matched to its message) and marks the event
done. If Temporal is down the event stays pending and `run` (the background
loop of `playbook serve`, also at its next start) delivers it later. The
signal carries the event's key as its id, so a play that hears an event twice
(marked done after a crash between signal and mark) applies it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from connectors.inbound import Incoming, Refused
from engine import enrollment
from engine import inbound as store_events
from engine.store import Store, StoreUnreachable
from workflows.client import TemporalUnreachable, send_event
from workflows.model import EventKind, PlayEvent

log = logging.getLogger("playbook.serve")

BATCH = 500  # pending events read at a time
PARALLEL = 32  # accounts signalled at once
_DOWN = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class Accepted:
    id: int
    duplicate: bool
    account_id: str


@dataclass
class Delivery:
    signalled: int = 0  # events marked done
    signals: int = 0  # signals sent (one per running play)
    left: int = 0  # still pending: Temporal unreachable
    failed: int = 0  # given up after `give_up_after` attempts


class _Down(Exception):
    """Temporal stopped answering midway: keep the rest pending."""


class Inbound:
    def __init__(self, store: Store, connect: Callable[[], Awaitable[Client]] | None, *,
                 retry_seconds: float = 10.0, give_up_after: int = 50) -> None:
        self.store = store
        self._connect = connect
        self._client: Client | None = None
        self.retry_seconds, self.give_up_after = retry_seconds, give_up_after
        self._wake = asyncio.Event()
        self._delivering = asyncio.Lock()
        # SQLite has one writer: queued here, writers take turns at once; left to the
        # busy timeout, each waiting thread sleeps in steps (a burst of 1,000 took 40 s instead of 3).
        self._writing = asyncio.Lock() if store.dialect == "sqlite" else None

    # -- accept ---------------------------------------------------------------
    async def accept(self, event: Incoming) -> Accepted:
        """Record `event` for its account (Refused 422 if none is found); wakes the deliverer."""
        # Look-up and insert in one thread hop: SQLite stays off the event loop.
        if self._writing is None:
            accepted = await asyncio.to_thread(self._record, event)
        else:
            async with self._writing:
                accepted = await asyncio.to_thread(self._record, event)
        if not accepted.duplicate:
            self._wake.set()
        return accepted

    def _record(self, event: Incoming) -> Accepted:
        account, contact, play = self._resolve(event)
        recorded = store_events.record(self.store, store_events.NewEvent(
            key=event.key, source=event.source, kind=event.kind, account_id=account, contact=contact, play=play,
            stage=event.stage, occurred_at=event.occurred_at, payload=event.payload or None,
            suppress=event.suppress))
        return Accepted(recorded.id, recorded.duplicate, account)

    def _resolve(self, event: Incoming) -> tuple[str, str | None, str | None]:
        """(account, contact, play) the event is about, from the most precise reference it carries."""
        contact = event.email
        if event.account_id is not None:
            if not store_events.account_exists(self.store, event.account_id):
                raise Refused(422, f"unknown account {event.account_id!r}")
            return event.account_id, contact, None
        if event.message_ids:
            sent = store_events.sent_message(self.store, event.message_ids)
            if sent is not None:
                return sent.account_id, contact or sent.recipient, sent.play
        if event.deal_id is not None:
            account = store_events.account_of_deal(self.store, event.deal_id)
            if account is not None:
                return account, contact, None
        if event.email is not None:
            try:
                account = store_events.account_of_contact(self.store, event.email)
            except store_events.Ambiguous as exc:
                raise Refused(422, f"{exc}: name the account") from None
            if account is not None:
                return account, contact, None
        raise Refused(422, f"no account found for {event.names()}")

    # -- deliver --------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    async def _client_or_none(self) -> Client | None:
        if self._client is None and self._connect is not None:
            try:
                self._client = await self._connect()
            except TemporalUnreachable as exc:
                log.warning("signals wait: %s", exc)
        return self._client

    async def deliver(self) -> Delivery:
        """Signal the plays of every pending event, oldest first; what could not be sent stays pending."""
        async with self._delivering:
            report = Delivery()
            client = await self._client_or_none()
            after = 0
            while True:
                if client is None:
                    counted = await asyncio.to_thread(store_events.counts, self.store)
                    report.left = counted.get("pending", 0)
                    return report
                batch = await asyncio.to_thread(store_events.pending, self.store, BATCH, after)
                if not batch:
                    return report
                after = batch[-1].id
                by_account: dict[str, list[store_events.PendingEvent]] = defaultdict(list)
                for ev in batch:
                    by_account[ev.account_id].append(ev)
                gate = asyncio.Semaphore(PARALLEL)
                results = await asyncio.gather(*(self._deliver_account(client, evs, gate, report)
                                                 for evs in by_account.values()), return_exceptions=True)
                done = [pair for r in results if isinstance(r, list) for pair in r]
                await asyncio.to_thread(store_events.mark_signalled, self.store, done)
                report.signalled += len(done)
                down = [r for r in results if isinstance(r, BaseException)]
                for exc in down:
                    if not isinstance(exc, _Down):
                        raise exc
                if down:
                    log.warning("Temporal stopped answering: %d event(s) stay pending (%s)",
                                len(batch) - len(done), down[0])
                    self._client = None  # reconnect next time
                    client = None

    async def _deliver_account(self, client: Client, events: list[store_events.PendingEvent],
                               gate: asyncio.Semaphore, report: Delivery) -> list[tuple[int, list[str]]]:
        """One account's events in order (a stage change after a reply stays after it)."""
        done: list[tuple[int, list[str]]] = []
        async with gate:
            running = await asyncio.to_thread(enrollment.active_plays, self.store, events[0].account_id)
            for ev in events:
                plays = [ev.play] if ev.play is not None else running
                plays = [p for p in plays if p in running]
                signal = PlayEvent(kind=EventKind(ev.kind), stage=ev.stage, at=ev.occurred_at, id=ev.key,
                                   source=ev.source)
                heard: list[str] = []
                try:
                    for play in plays:
                        if await send_event(client, play, ev.account_id, signal):
                            heard.append(play)
                            report.signals += 1
                except RPCError as exc:
                    if exc.status in _DOWN:
                        raise _Down(exc.message) from exc
                    failed = await asyncio.to_thread(store_events.mark_retry, self.store, ev.id,
                                                     f"{exc.status.name if exc.status else 'error'}: {exc.message}",
                                                     self.give_up_after)
                    log.warning("event %s: signal refused (%s)%s", ev.key, exc.message,
                                "; giving up" if failed else "; will retry")
                    report.failed += int(failed)
                    continue
                done.append((ev.id, heard))
        return done

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Deliver now, then whenever an event is accepted or `retry_seconds` pass, until `stop`."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            self._wake.clear()
            try:
                report = await self.deliver()
                if report.signalled or report.left:
                    log.info("signals: %d event(s) delivered (%d signal(s)), %d pending",
                             report.signalled, report.signals, report.left)
            except StoreUnreachable as exc:
                log.warning("signals wait: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad batch; said in one line
                log.error("signals: %s: %s", type(exc).__name__, exc)
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, timeout=self.retry_seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()


__all__ = ["Accepted", "Delivery", "Inbound"]
