"""One-click unsubscribe tokens: only the secret's holder makes a link, and a link names one contact."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from connectors import unsubscribe
from connectors.base import Connectors
from connectors.memory import MemoryConnector
from dsl import nodes as n
from dsl.evaluator import Account
from workflows.activities import PlayActivities, Recipient, StaticAccounts, _StepResolver
from workflows.model import StepContext, StepRequest

SECRET = SecretStr("s3cret")


def test_a_token_is_valid_only_for_its_contact_account_and_play():
    t = unsubscribe.token(SECRET, "c1", "acme", "usage_limit")
    assert unsubscribe.valid(SECRET, "c1", "acme", "usage_limit", t)
    for other in [("c2", "acme", "usage_limit"), ("c1", "beta", "usage_limit"), ("c1", "acme", "renewal")]:
        assert not unsubscribe.valid(SECRET, *other, t)
    assert not unsubscribe.valid(SecretStr("another"), "c1", "acme", "usage_limit", t)


def test_fields_cannot_be_shifted_between_contact_and_account():
    assert unsubscribe.token(SECRET, "a|b", "c", "p") != unsubscribe.token(SECRET, "a", "b|c", "p")


def test_the_link_carries_the_ids_and_a_token_that_checks():
    link = unsubscribe.link("https://events.acme.test/", SECRET, "ada+x@acme.test", "acme", "usage_limit")
    parts = urlsplit(link)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.path == "/unsubscribe" and q["c"] == "ada+x@acme.test"
    assert unsubscribe.valid(SECRET, q["c"], q["a"], q["p"], q["t"])


def test_the_worker_writes_links_serve_accepts():
    acts = PlayActivities(Connectors.single(MemoryConnector()), StaticAccounts({"acme": Account(fields={})}),
                          unsubscribe_url="https://e.test/unsubscribe?c={contact}&a={account_id}&p={play}&t={token}",
                          unsubscribe_secret=SECRET)
    ctx = StepContext(key="play:usage_limit:acme:h:e:day1", play="usage_limit", plan_hash="h", account_id="acme",
                      step="day1", requested_at=dt.datetime(2026, 3, 9, tzinfo=dt.timezone.utc))
    req = StepRequest(ctx=ctx, action=n.EmailStep(to=n.Ref(path=["account", "admin"]), template="t"))
    url = _StepResolver(acts, req).unsubscribe_url(Recipient(address="ada@acme.test"))
    assert url is not None
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert (q["c"], q["a"], q["p"]) == ("ada@acme.test", "acme", "usage_limit")
    assert unsubscribe.valid(SECRET, q["c"], q["a"], q["p"], q["t"])


@pytest.mark.parametrize("contact", ["ada@acme.test", "c1"])
def test_a_token_differs_per_contact(contact):
    assert unsubscribe.token(SECRET, contact, "acme", "p") != unsubscribe.token(SECRET, contact + "x", "acme", "p")
