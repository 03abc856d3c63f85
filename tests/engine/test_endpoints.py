"""Webhook endpoints disabled by a 410: kept in the store, first mark kept, enabled again on demand."""

from __future__ import annotations

import datetime as dt

import pytest

from engine import endpoints
from store_backends import BACKENDS, fresh_store

AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
URL = "https://hooks.example.test/p"


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    with fresh_store(request.param, tmp_path) as st:
        yield st


def test_the_first_disable_is_kept_so_it_says_when_the_receiver_went_away(store):
    with store.begin() as conn:
        endpoints.disable(conn, URL, at=AT, reason="HTTP 410 Gone at play p step s1")
        endpoints.disable(conn, URL, at=AT + dt.timedelta(days=1), reason="later")
    with store.connect() as conn:
        gone = endpoints.disabled(conn, URL)
    assert gone is not None and gone.at == AT and gone.reason.startswith("HTTP 410")


def test_enable_removes_the_mark_and_says_whether_there_was_one(store):
    with store.begin() as conn:
        endpoints.disable(conn, URL, at=AT, reason="gone")
        assert endpoints.enable(conn, URL) and not endpoints.enable(conn, URL)
        assert endpoints.disabled(conn, URL) is None
