"""Holdout assignment: which accounts a play holds out (`holdout 10%`).

An account is held out of play P when the bucket of (P, account id) falls
below P's share: the bucket is the first 8 bytes of SHA-256 over the UTF-8
text `P` + NUL + `account id`, as a big-endian integer, modulo 10,000 (one
bucket per 0.01%). Nothing else goes in (no salt, no date, no store), so the
same account is in or out of a given play at every sweep, on every machine
and on both stores, and raising the share from 10% to 15% keeps the first
10% held out. The decision is taken in Python (engine/enroll.py), where
every enrollment decision is taken, so no SQL dialect has to agree with it.
Different plays hash differently, so one play's control group is not
another's.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000  # a share is kept to 0.01%


def bucket(play: str, account_id: str) -> int:
    """The account's place in 0..9,999 for `play`, the same everywhere."""
    digest = hashlib.sha256(f"{play}\0{account_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def held_out(play: str, account_id: str, percent: float | None) -> bool:
    """Whether a play declaring `holdout percent%` holds the account out (never, without a holdout)."""
    if not percent:
        return False
    return bucket(play, account_id) < round(percent * BUCKETS / 100)


__all__ = ["BUCKETS", "bucket", "held_out"]
