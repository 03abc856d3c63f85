"""Replies and bounces read over IMAP from a real server (pymap on loopback) into the store, once each."""

from __future__ import annotations

import imaplib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors.inbound_imap import MailboxSettings
from peers import free_port, imap_server
from serve_support import SENT_ID, events, seeded_store, serving, settings, unsubscribed
from workflows.imap_poll import poll_forever, poll_once
from workflows.inbound import Inbound

pytestmark = pytest.mark.anyio
USER, PASSWORD = "replies", "imap-pass"
ROOT = Path(__file__).resolve().parents[2]

REPLY = f"""From: Ada <ada@acme.test>
To: cs@playbook.test
Subject: Re: Your usage
Date: Mon, 09 Mar 2026 15:00:00 +0000
Message-ID: <reply-1@acme.test>
In-Reply-To: {SENT_ID}
References: {SENT_ID}

Yes, let's talk.
"""

OUT_OF_OFFICE = f"""From: Ada <ada@acme.test>
To: cs@playbook.test
Subject: Out of office
Message-ID: <ooo-1@acme.test>
In-Reply-To: {SENT_ID}
Auto-Submitted: auto-replied

Back on Monday.
"""

STRANGER = """From: someone@else.test
To: cs@playbook.test
Subject: Re: something
Message-ID: <stranger-1@else.test>
In-Reply-To: <never-sent@playbook.test>

Who are you?
"""


def dsn(action: str, status: str, message_id: str) -> str:
    """An RFC 3464 delivery status notification for bob@beta.test."""
    return f"""From: Mail Delivery System <MAILER-DAEMON@mx.beta.test>
To: cs@playbook.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-{action}-{status}@mx.beta.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain

Your message could not be delivered.

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.beta.test

Final-Recipient: rfc822; bob@beta.test
Action: {action}
Status: {status}
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--BOUNDARY
Content-Type: text/rfc822-headers

From: cs@playbook.test
To: bob@beta.test
Subject: Your usage
Message-ID: {message_id}

--BOUNDARY--
"""


def append(port: int, *messages: str) -> None:
    box = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        box.login(USER, PASSWORD)
        for m in messages:
            typ, data = box.append("INBOX", None, None, m.replace("\n", "\r\n").encode())
            assert typ == "OK", data
    finally:
        box.logout()


def unseen(port: int) -> list[bytes]:
    box = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        box.login(USER, PASSWORD)
        box.select("INBOX")
        _, data = box.uid("SEARCH", None, "UNSEEN")  # type: ignore[arg-type]
        return data[0].split()
    finally:
        box.logout()


@pytest.fixture
def port():
    with imap_server(USER, PASSWORD) as p:
        yield p


@pytest.fixture
def store(tmp_path):
    st = seeded_store(tmp_path / "imap.db")
    yield st
    st.close()


def mailbox(port: int) -> MailboxSettings:
    return MailboxSettings("127.0.0.1", port, USER, SecretStr(PASSWORD), tls=False)


async def test_a_reply_and_a_failure_report_are_recorded_and_the_rest_is_ignored(port, store):
    append(port, REPLY, dsn("failed", "5.1.1", "<lost@playbook.test>"), OUT_OF_OFFICE, STRANGER,
           dsn("delayed", "4.4.1", "<slow@playbook.test>"))
    report = await poll_once(Inbound(store, None), mailbox(port))
    assert (report.read, report.accepted, report.duplicates, report.ignored) == (5, 2, 0, 3)
    rows = {r["kind"]: r for r in events(store)}
    assert set(rows) == {"replied", "bounced"}
    # The reply found its message: only that message's play hears it.
    assert (rows["replied"]["key"], rows["replied"]["account_id"], rows["replied"]["play"]) == (
        "imap:<reply-1@acme.test>", "acme", "usage_limit")
    # The bounce's original was never sent by us: the recipient's address names the account.
    assert (rows["bounced"]["account_id"], rows["bounced"]["contact"]) == ("beta", "bob@beta.test")
    assert unsubscribed(store, "c2", "bounced_at") is not None
    assert unseen(port) == []  # every message handled is marked \Seen, the ignored ones too


async def test_a_message_read_again_records_nothing_new(port, store):
    append(port, REPLY)
    first = await poll_once(Inbound(store, None), mailbox(port))
    append(port, REPLY)  # the same message again (a copy, or \Seen lost)
    second = await poll_once(Inbound(store, None), mailbox(port))
    assert (first.accepted, second.accepted, second.duplicates) == (1, 0, 1)
    assert len(events(store)) == 1


async def test_a_bounce_matched_to_its_sent_message_names_that_play(port, store):
    append(port, dsn("failed", "5.1.1", SENT_ID))
    await poll_once(Inbound(store, None), mailbox(port))
    [row] = events(store)
    assert (row["kind"], row["account_id"], row["play"]) == ("bounced", "acme", "usage_limit")


async def test_a_wrong_password_is_an_imap_error(port, store):
    with pytest.raises(imaplib.IMAP4.error):
        await poll_once(Inbound(store, None), MailboxSettings("127.0.0.1", port, USER, SecretStr("no"), tls=False))


def test_imap_poll_once_stores_and_leaves_signals_pending_while_temporal_is_down(port, store, tmp_path):
    append(port, REPLY)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLAYBOOK_SERVE_IMAP_HOST": "127.0.0.1",
           "PLAYBOOK_SERVE_IMAP_PORT": str(port), "PLAYBOOK_SERVE_IMAP_USER": USER,
           "PLAYBOOK_SERVE_IMAP_PASSWORD": PASSWORD, "PLAYBOOK_SERVE_IMAP_TLS": "false",
           "PLAYBOOK_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "PLAYBOOK_SETTINGS_FILE": "",
           "PLAYBOOK_DATABASE_URL": str(store.engine.url)}
    done = subprocess.run([sys.executable, "-m", "cli.main", "imap-poll", "--once"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 read, 1 new" in done.stdout and "1 waiting for Temporal" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    assert [(r["kind"], r["signal_state"]) for r in events(store)] == [("replied", "pending")]


def test_serve_with_imap_reads_the_mailbox_in_the_background(port, store):
    imap = settings(imap_host="127.0.0.1", imap_port=port, imap_user=USER, imap_password=SecretStr(PASSWORD),
                    imap_tls=False, imap_poll_seconds=0.2)
    inbound = Inbound(store, None)
    with serving(inbound, imap, background=lambda stop: poll_forever(inbound, imap, stop)):
        append(port, REPLY)
        deadline = time.monotonic() + 30
        while not events(store):
            assert time.monotonic() < deadline, "serve --imap did not read the reply"
            time.sleep(0.1)
    assert [(r["kind"], r["account_id"]) for r in events(store)] == [("replied", "acme")]
    assert unseen(port) == []
