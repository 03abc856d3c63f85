"""Postmark's webhook bodies and what each becomes."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import SecretStr

from connectors.inbound import Ignored, Incoming, Refused
from connectors.inbound_postmark import parse, verify


def test_a_spam_complaint_unsubscribes_the_address():
    got = parse(json.dumps({"RecordType": "SpamComplaint", "ID": 9, "Email": "ada@acme.test",
                            "MessageID": "pm-1", "BouncedAt": "2026-03-09T15:00:00Z"}).encode())
    assert isinstance(got, Incoming)
    assert (got.kind, got.email, got.suppress, got.message_ids) == ("unsubscribed", "ada@acme.test", True, ("pm-1",))


def test_a_subscription_change_only_counts_when_it_suppresses():
    change = {"RecordType": "SubscriptionChange", "MessageID": "pm-2", "Recipient": "ada@acme.test",
              "ChangedAt": "2026-03-09T15:00:00Z", "SuppressSending": True}
    assert isinstance(parse(json.dumps(change).encode()), Incoming)
    assert isinstance(parse(json.dumps(change | {"SuppressSending": False}).encode()), Ignored)


def test_an_inbound_message_lists_in_reply_to_first_then_references_newest_first():
    got = parse(json.dumps({"FromFull": {"Email": "ada@acme.test"}, "MessageID": "pm-3", "Headers": [
        {"Name": "In-Reply-To", "Value": "<b@x>"}, {"Name": "References", "Value": "<a@x> <b@x>"}]}).encode())
    assert isinstance(got, Incoming) and got.message_ids == ("<b@x>", "<b@x>", "<a@x>")
    assert got.key == "postmark:inbound:pm-3"  # no Message-ID header: Postmark's id


@pytest.mark.parametrize("auth", ["", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"u:wrong").decode()])
def test_anything_but_the_configured_basic_auth_is_refused(auth):
    with pytest.raises(Refused) as got:
        verify("u", SecretStr("right"), {"Authorization": auth} if auth else {})
    assert got.value.status == 401
