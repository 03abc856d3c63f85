"""What an incoming email is: a reply, a failure report (RFC 3464), or nothing for a play."""

from __future__ import annotations

from email.message import EmailMessage

from connectors.inbound import Ignored, Incoming
from connectors.inbound_imap import classify


def test_a_dsn_with_the_whole_original_attached_finds_its_message_id():
    original = EmailMessage()
    original["Message-ID"] = "<sent-1@pb.test>"
    original["To"] = "bob@beta.test"
    original.set_content("hello")
    raw = (b"Message-ID: <dsn-1@mx>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
           b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
           b"Final-Recipient: rfc822; bob@beta.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
           b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + original.as_bytes() + b"\r\n--B--\r\n")
    got = classify(raw)
    assert isinstance(got, Incoming)
    assert (got.kind, got.email, got.message_ids, got.suppress) == ("bounced", "bob@beta.test", ("<sent-1@pb.test>",),
                                                                    True)
    assert got.key == "imap:<dsn-1@mx>"


def test_a_message_that_answers_nothing_is_ignored_and_one_without_an_id_gets_a_hash_key():
    got = classify(b"From: a@b.test\r\nSubject: hi\r\n\r\nhello\r\n")
    assert isinstance(got, Ignored) and got.key.startswith("imap:sha256:")


def test_a_reply_names_its_sender_and_the_ids_it_answers():
    got = classify(b"From: Ada <ada@acme.test>\r\nMessage-ID: <r@acme>\r\nIn-Reply-To: <s@pb>\r\n"
                   b"References: <t@pb> <s@pb>\r\n\r\nyes\r\n")
    assert isinstance(got, Incoming) and (got.kind, got.email) == ("replied", "ada@acme.test")
    assert got.message_ids == ("<s@pb>", "<s@pb>", "<t@pb>")
