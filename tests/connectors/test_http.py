"""Retry-After and HTTP statuses as connector errors, shared by the HTTP connectors."""

from __future__ import annotations

import datetime as dt

import pytest

from connectors import base as cb
from connectors.http import MAX_RETRY_AFTER, retry_after, status_error

NOW = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)


def test_retry_after_in_seconds_is_read_whatever_the_header_case():
    assert retry_after({"retry-after": "30"}, NOW) == 30.0
    assert retry_after({"Retry-After": " 5 "}, NOW) == 5.0


def test_retry_after_as_an_http_date_is_the_time_left_until_then():
    assert retry_after({"Retry-After": "Mon, 09 Mar 2026 14:02:00 GMT"}, NOW) == 120.0
    assert retry_after({"Retry-After": "Mon, 09 Mar 2026 13:00:00 GMT"}, NOW) == 0.0  # already past


def test_an_absent_or_unreadable_retry_after_leaves_the_backoff_to_the_policy():
    assert retry_after({}, NOW) is None and retry_after(None, NOW) is None
    assert retry_after({"Retry-After": "soon"}, NOW) is None and retry_after({"Retry-After": "-3"}, NOW) is None


def test_a_huge_retry_after_is_clamped():
    assert retry_after({"Retry-After": "999999"}, NOW) == MAX_RETRY_AFTER


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_throttling_and_server_faults_are_transient(status):
    err = status_error(status, "x", {"Retry-After": "3"})
    assert isinstance(err, cb.TransientError) and err.retry_after == 3.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_client_errors_are_permanent(status):
    assert isinstance(status_error(status, "x"), cb.PermanentError)
