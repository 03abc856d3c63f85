"""Confidence intervals the reports use, at 95% by default, with no dependency beyond the standard library.

- `wilson`: a proportion's Wilson score interval (Wilson 1927), good near 0 and 1
  and with small counts, where the textbook p ± z·se interval is not.
- `newcombe`: a difference of two independent proportions, Newcombe's hybrid score
  interval (1998, method 10), built from the two Wilson intervals.
- `welch`: a difference of two means with Welch's unequal-variance standard error and
  the normal quantile (z), not Student's t: the reports ask for at least `MIN_GROUP`
  per group, where t and z differ by under 4%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95


def z_for(confidence: float = CONFIDENCE) -> float:
    """The two-sided normal quantile: 1.959964 for 95%."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def to_json(self, places: int = 6) -> dict[str, float]:
        return {"estimate": round(self.estimate, places), "low": round(self.low, places),
                "high": round(self.high, places)}


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson needs 0 <= successes <= n and n > 0, not {successes}/{n}")
    z = z_for(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exact bounds at 0 and n (the formula gives them up to rounding).
    return Interval(p, 0.0 if successes == 0 else centre - half, 1.0 if successes == n else centre + half)


def newcombe(x1: int, n1: int, x2: int, n2: int, confidence: float = CONFIDENCE) -> Interval:
    """p1 - p2 with Newcombe's hybrid score interval."""
    a, b = wilson(x1, n1, confidence), wilson(x2, n2, confidence)
    d = a.estimate - b.estimate
    low = d - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = d + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(d, low, high)


def mean_var(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample variance (n - 1); variance 0 for fewer than 2 values."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def welch(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """mean(a) - mean(b) ± z · sqrt(var(a)/n(a) + var(b)/n(b))."""
    (ma, va), (mb, vb) = mean_var(a), mean_var(b)
    se = math.sqrt(va / len(a) + vb / len(b))
    d = ma - mb
    half = z_for(confidence) * se
    return Interval(d, d - half, d + half)


__all__ = ["CONFIDENCE", "Interval", "mean_var", "newcombe", "welch", "wilson", "z_for"]
