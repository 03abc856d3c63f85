"""One-click unsubscribe links (RFC 8058): a token only we can make.

The token is HMAC-SHA256 over contact, account and play with the
`unsubscribe_secret` setting, so a link unsubscribes the one contact it was
written for and nobody can forge one for another address. The worker puts
`link(...)` into `{{ unsubscribe_url }}` (workflows/activities.py); the email
connector copies it into `List-Unsubscribe` with
`List-Unsubscribe-Post: List-Unsubscribe=One-Click`; `playbook serve`
checks it at `/unsubscribe`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

from pydantic import SecretStr

PATH = "/unsubscribe"


def token(secret: SecretStr, contact: str, account_id: str, play: str) -> str:
    # A separator no id contains, so ("a|b", "c") and ("a", "b|c") sign differently.
    message = "\x1f".join((contact, account_id, play)).encode()
    digest = hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def valid(secret: SecretStr, contact: str, account_id: str, play: str, given: str) -> bool:
    return hmac.compare_digest(token(secret, contact, account_id, play), given)


def link(base_url: str, secret: SecretStr, contact: str, account_id: str, play: str) -> str:
    """The unsubscribe URL for one contact of one account, written by one play."""
    query = urlencode({"c": contact, "a": account_id, "p": play, "t": token(secret, contact, account_id, play)})
    return f"{base_url.rstrip('/')}{PATH}?{query}"


__all__ = ["PATH", "link", "token", "valid"]
