"""Welch's t-test against values from statistical tables."""

from __future__ import annotations

import numpy as np
import pytest

from dreamenv.stats import incomplete_beta, t_two_sided_p, welch_test


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (2.228, 10, 0.05),
        (2.0, 10, 0.0734),
        (1.96, 1e6, 0.05),
        (3.169, 10, 0.01),
        (0.0, 5, 1.0),
        (12.706, 1, 0.05),
    ],
)
def test_t_p_values_match_tables(t: float, df: float, p: float) -> None:
    assert t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)


def test_incomplete_beta_limits_and_symmetry() -> None:
    assert incomplete_beta(2.0, 3.0, 0.0) == 0.0 and incomplete_beta(2.0, 3.0, 1.0) == 1.0
    assert incomplete_beta(2.0, 3.0, 0.3) == pytest.approx(1 - incomplete_beta(3.0, 2.0, 0.7))
    assert incomplete_beta(1.0, 1.0, 0.42) == pytest.approx(0.42)  # uniform CDF


def test_welch_test() -> None:
    t, df, p = welch_test(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    assert t == pytest.approx(3.674, abs=1e-3) and df == pytest.approx(4.0)
    assert p == pytest.approx(0.0213, abs=2e-4)
    assert welch_test(np.ones(4), np.ones(4)) == (0.0, 6.0, 1.0)
    t, _, p = welch_test(np.ones(4), np.zeros(4))
    assert t == float("inf") and p == 0.0
