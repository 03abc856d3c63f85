"""The reports' intervals against published values (Newcombe 1998, Statistics in Medicine 17:857-872 and
873-890) and against Welch's formula worked by hand."""

from __future__ import annotations

import math

import pytest

from engine.reports.stats import mean_var, newcombe, welch, wilson, z_for


def test_z_for_95_percent() -> None:
    assert z_for() == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize("x,n,low,high", [
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998a), Table I, method 3 (score)
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_the_published_intervals(x: int, n: int, low: float, high: float) -> None:
    ci = wilson(x, n)
    assert (round(ci.low, 4), round(ci.high, 4)) == (low, high)
    assert ci.estimate == x / n


@pytest.mark.parametrize("x1,n1,x2,n2,low,high", [
    (56, 70, 48, 80, 0.0524, 0.3339),  # Newcombe (1998b), Table II, method 10 (hybrid score)
    (9, 10, 3, 10, 0.1705, 0.8090),
])
def test_newcombe_matches_the_published_intervals(x1: int, n1: int, x2: int, n2: int, low: float,
                                                  high: float) -> None:
    ci = newcombe(x1, n1, x2, n2)
    assert (round(ci.low, 4), round(ci.high, 4)) == (low, high)
    assert ci.estimate == pytest.approx(x1 / n1 - x2 / n2)


def test_newcombe_is_antisymmetric() -> None:
    a, b = newcombe(12, 40, 5, 39), newcombe(5, 39, 12, 40)
    assert (a.low, a.high) == pytest.approx((-b.high, -b.low))


def test_welch_by_hand() -> None:
    # means 3 and 7, variances 2.5 and 14: se = sqrt(2.5/5 + 14/6) = 1.683251; 1.959964 * se = 3.299111
    ci = welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10, 12])
    assert ci.estimate == -4
    assert (ci.low, ci.high) == pytest.approx((-7.299111, -0.700889), abs=1e-6)


def test_mean_var_uses_n_minus_one() -> None:
    assert mean_var([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == (5.0, pytest.approx(32 / 7))
    assert mean_var([3.0]) == (3.0, 0.0)


def test_wilson_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson(3, 2)
    assert math.isfinite(wilson(2, 2).low)
