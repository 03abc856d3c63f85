"""Product events (a Segment-compatible tracking API, workflows/segment.py) written to the store.

    found = lookup(store, user_ids, emails, account_ids)
    written = write(store, catalog, messages)

Each message is mapped to rows (an event, a contact, an account) before it
gets here. `write` puts the rows of all messages of a request through the
bulk importer (engine/importers.py: staged, checked set-wise, account values
replaced recorded in account_field_history) in one transaction. A message
whose value the importer refuses (an email that is no address, a number that
is not one) is taken out with the importer's reason and the rest written
again: one bad trait does not lose its neighbours, and nothing of a refused
message is written. Events are keyed `id:<event>:<messageId>`, so a batch sent
again stores each event once; identify and group calls write values, which
written twice change nothing (and add no history).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dsl.catalog import Catalog
from engine import schema
from engine.importers import ImportFailed, Kind, event_key, import_files
from engine.store import Store, chunked

ATTEMPTS = 3  # a refusal found only once others were taken out (a required field) needs another pass


@dataclass
class Rows:
    """What one message writes: any of an event, a contact and an account row (importer columns)."""

    message_id: str
    event: dict[str, Any] | None = None
    contact: dict[str, Any] | None = None
    account: dict[str, Any] | None = None


@dataclass
class Found:
    """Who the messages name, as the store knows them."""

    contact_account: dict[str, str] = field(default_factory=dict)  # contact id -> account id
    email_contacts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # lower(email) -> [(contact, account)]
    accounts: set[str] = field(default_factory=set)


@dataclass
class Written:
    accepted: int = 0  # messages whose rows were written (events new or values set)
    duplicates: int = 0  # events already stored (a batch sent again)
    changed_values: int = 0  # account values that changed (each one a history row)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (messageId, reason)


def lookup(store: Store, user_ids: Iterable[str], emails: Iterable[str], account_ids: Iterable[str]) -> Found:
    """Contacts by id and by address (case-insensitive), and which of `account_ids` exist."""
    contacts, accounts = schema.Contact.__table__, schema.Account.__table__
    found = Found()
    with store.connect() as conn:
        for part in chunked(sorted(set(user_ids)), 1000):
            for cid, aid in conn.execute(sa.select(contacts.c.id, contacts.c.account_id).where(contacts.c.id.in_(part))):
                found.contact_account[cid] = aid
        for part in chunked(sorted({e.lower() for e in emails}), 1000):
            q = sa.select(contacts.c.id, contacts.c.account_id, sa.func.lower(contacts.c.email)).where(
                sa.func.lower(contacts.c.email).in_(part))
            for cid, aid, email in conn.execute(q):
                found.email_contacts.setdefault(email, []).append((cid, aid))
        for part in chunked(sorted(set(account_ids)), 1000):
            found.accounts.update(conn.execute(sa.select(accounts.c.id).where(accounts.c.id.in_(part))).scalars())
    return found


def write(store: Store, catalog: Catalog, messages: Sequence[Rows], *, known_at: dt.datetime | None = None,
          actor: str = "segment") -> Written:
    """Write the rows of `messages` in one transaction, leaving out (and naming) those the importer refuses."""
    out = Written()
    left = [m for m in messages if m.event or m.contact or m.account]
    out.duplicates = _stored_events(store, [m for m in left if m.event])
    for _ in range(ATTEMPTS):
        if not left:
            break
        with tempfile.TemporaryDirectory(prefix="pb-segment-") as tmp:
            files, owners = _files(Path(tmp), left)
            try:
                report = import_files(store, catalog, files, max_errors=len(left) * 3 + 10, actor=actor,
                                      known_at=known_at)
            except ImportFailed as exc:
                bad: dict[int, str] = {}
                for e in exc.errors:
                    for i in owners.get((Path(e.file).stem, e.row), [None]):
                        if i is None:
                            raise  # a problem of no one message: a bug of the mapping, not of the data
                        bad.setdefault(i, f"{e.column}: {e.reason}" if e.column else e.reason)
                for i, reason in sorted(bad.items()):
                    out.refused.append((left[i].message_id, reason))
                left = [m for i, m in enumerate(left) if i not in bad]
                continue
            out.changed_values = report.changed_values
            out.accepted = len(left)
            return out
    if left:  # every pass found more to refuse: refuse the rest rather than loop
        out.refused.extend((m.message_id, "refused with the messages before it") for m in left)
    return out


def _stored_events(store: Store, messages: Sequence[Rows]) -> int:
    keys = {event_key(m.event["account_id"], m.event["event"], m.event["occurred_at"], m.event["id"]): 1
            for m in messages if m.event}
    events = schema.Event.__table__
    n = 0
    with store.connect() as conn:
        for part in chunked(list(keys), 1000):
            n += conn.execute(sa.select(sa.func.count()).where(events.c.key.in_(part))).scalar_one()
    return n


def _files(folder: Path, messages: Sequence[Rows]) -> tuple[list[tuple[Kind, Path]], dict[tuple[str, int], list[int]]]:
    """JSON Lines files of the messages' rows (one row per id: later messages' values win) and, per
    (file stem, line), the messages the line came from."""
    accounts: dict[str, tuple[dict[str, Any], list[int]]] = {}
    contacts: dict[str, tuple[dict[str, Any], list[int]]] = {}
    events: list[tuple[dict[str, Any], list[int]]] = []
    for i, m in enumerate(messages):
        for row, into in ((m.account, accounts), (m.contact, contacts)):
            if row is not None:
                merged, owners = into.setdefault(row["id"], ({}, []))
                merged.update(row)
                owners.append(i)
        if m.event is not None:
            events.append(({**m.event, "occurred_at": m.event["occurred_at"].isoformat()}, [i]))
    files: list[tuple[Kind, Path]] = []
    owners_by_line: dict[tuple[str, int], list[int]] = {}
    for kind, rows in (("accounts", list(accounts.values())), ("contacts", list(contacts.values())),
                       ("events", events)):
        if not rows:
            continue
        path = folder / f"{kind}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for line, (row, owners) in enumerate(rows, start=1):
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                owners_by_line[(kind, line)] = owners
        files.append((kind, path))  # type: ignore[arg-type]
    return files, owners_by_line


__all__ = ["Found", "Rows", "Written", "lookup", "write"]
