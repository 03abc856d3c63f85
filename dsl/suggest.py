"""'Did you mean' suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, candidates: Iterable[str]) -> str | None:
    options = list(candidates)
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if match:
        return match[0]
    lowered = {c.lower(): c for c in options}
    return lowered.get(name.lower())


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    best = closest(name, candidates)
    return f"Did you mean '{best}'?" if best else ""
