"""Welch's t-test against values from statistical tables, and the agent-versus-random
comparison every face prints."""

from __future__ import annotations

import numpy as np
import pytest

from dreamenv.stats import AgainstRandom, welch_test


def test_welch_test_matches_a_worked_example() -> None:
    t, df, p = welch_test(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    assert t == pytest.approx(3.674, abs=1e-3) and df == pytest.approx(4.0)
    assert p == pytest.approx(0.0213, abs=2e-4)


def test_welch_test_with_unequal_variances() -> None:
    """Welch's df (Welch-Satterthwaite) is not the pooled test's n - 2."""
    a = np.array([19.1, 20.3, 18.7, 21.0, 20.1])
    b = np.array([10.0, 25.0, 14.0, 30.0, 8.0, 22.0, 17.0])
    t, df, p = welch_test(a, b)
    va, vb = a.var(ddof=1) / 5, b.var(ddof=1) / 7
    assert df == pytest.approx((va + vb) ** 2 / (va**2 / 4 + vb**2 / 6))
    assert t == pytest.approx((a.mean() - b.mean()) / np.sqrt(va + vb))
    assert 0.05 < p < 1.0


def test_welch_test_without_spread() -> None:
    assert welch_test(np.ones(4), np.ones(4)) == (0.0, 6.0, 1.0)
    t, _, p = welch_test(np.ones(4), np.zeros(4))
    assert t == float("inf") and p == 0.0
    t, _, p = welch_test(np.zeros(4), np.ones(4))
    assert t == float("-inf") and p == 0.0


def test_welch_test_needs_two_values_per_sample() -> None:
    with pytest.raises(ValueError, match="at least 2 values per sample, got 1 and 3"):
        welch_test(np.ones(1), np.ones(3))


def test_against_random_prints_both_samples_and_the_test() -> None:
    compared = AgainstRandom.of(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    assert (compared.welch_t, compared.welch_df) == pytest.approx((3.674, 4.0), abs=1e-3)
    assert compared.lines("agent", 2, "goals", "random, success").splitlines() == [
        "agent: 4.00 ± 1.00 over 3 goals",
        "random, success: 1.00 ± 1.00 over 3 goals",
        "Welch's t = 3.67 (df 4.0), two-sided p = 0.021",
    ]


def test_against_random_with_one_value_has_no_test() -> None:
    compared = AgainstRandom.of(np.array([3.0]), np.array([0.0, 1.0]))
    assert np.isnan([compared.welch_t, compared.welch_df, compared.p_value]).all()
    assert compared.test() == "Welch's t: not computed (a sample has fewer than 2 values)"
    assert compared.lines("agent").splitlines()[0] == "agent: 3.0 ± 0.0 over 1 real episodes"
