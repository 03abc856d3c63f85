"""What HTTP providers' answers mean for a retry: Retry-After, and status codes as connector errors.

Shared by the connectors that speak HTTP (Slack, webhooks, the HTTP email API),
so a 429 or a 503 means the same thing in each of them.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Mapping

from connectors import base as cb

MAX_RETRY_AFTER = 3600.0  # a provider asking for more than an hour is clamped: the policy's timeouts still rule


def retry_after(headers: Mapping[str, str] | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 10.2.3);
    None when absent or unreadable (the retry policy's backoff applies)."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = str(value).strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER)


def status_error(status: int, what: str, headers: Mapping[str, str] | None = None,
                 detail: str = "") -> cb.ConnectorError:
    """The connector error for a non-2xx answer: 408, 425, 429 and 5xx are worth retrying
    (with Retry-After when the provider gave one), any other 4xx is not."""
    message = f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
    if status in (408, 425, 429) or status >= 500:
        return cb.TransientError(message, retry_after=retry_after(headers))
    return cb.PermanentError(message)


__all__ = ["MAX_RETRY_AFTER", "retry_after", "status_error"]
