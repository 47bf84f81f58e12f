"""Statistics for comparing returns: Welch's t-test (SciPy's), as the reports state it, and
:class:`AgainstRandom`, the one comparison of an agent with a random policy that every
example, benchmark and command prints.

Example:
    >>> t, df, p = welch_test(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    >>> round(p, 4)
    0.0213
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def welch_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Welch's t statistic of mean(a) - mean(b), its degrees of freedom and two-sided p.

    Two samples without spread (as returns of a deterministic game can be) have no
    t-distribution: equal means give ``(0, n - 2, 1)``, different means ``(±inf, n - 2, 0)``.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(
            f"welch_test needs at least 2 values per sample, got {len(a)} and {len(b)}."
        )
    if a.var(ddof=1) + b.var(ddof=1) == 0:
        diff = a.mean() - b.mean()
        df = float(len(a) + len(b) - 2)
        return (0.0, df, 1.0) if diff == 0 else (math.copysign(math.inf, diff), df, 0.0)
    from scipy import stats  # imported here: importing this module stays cheap

    result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.df), float(result.pvalue)


def mean_std(values: np.ndarray, digits: int = 1) -> str:
    """``"mean ± std"`` of ``values`` (sample std; 0 for a single value), as the reports
    print returns.

    Example:
        >>> mean_std(np.array([1.0, 2.0, 3.0]))
        '2.0 ± 1.0'
    """
    x = np.asarray(values, float)
    std = x.std(ddof=1) if len(x) > 1 else 0.0
    return f"{x.mean():.{digits}f} ± {std:.{digits}f}"


@dataclass(frozen=True)
class AgainstRandom:
    """A policy's returns beside a uniformly random policy's, compared by Welch's t-test.

    Example:
        >>> compared = AgainstRandom.of(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
        >>> print(compared.lines("agent"))
        agent: 4.0 ± 1.0 over 3 real episodes
        random policy: 1.0 ± 1.0 over 3 real episodes
        Welch's t = 3.67 (df 4.0), two-sided p = 0.021
    """

    agent: np.ndarray
    """Returns of the policy's episodes."""
    random: np.ndarray
    """Returns of the random policy's episodes."""
    welch_t: float
    """Welch's t statistic of mean(agent) - mean(random); NaN where a sample has fewer than
    two values."""
    welch_df: float
    """Its degrees of freedom (NaN likewise)."""
    p_value: float
    """Its two-sided p-value (NaN likewise)."""

    @classmethod
    def of(cls, agent: np.ndarray, random: np.ndarray) -> AgainstRandom:
        """Compare two samples; with fewer than two values in either, the test is NaN."""
        a, b = np.asarray(agent, float), np.asarray(random, float)
        if min(len(a), len(b)) < 2:
            return cls(a, b, math.nan, math.nan, math.nan)
        return cls(a, b, *welch_test(a, b))

    def lines(
        self,
        label: str,
        digits: int = 1,
        unit: str = "real episodes",
        random_label: str = "random policy",
    ) -> str:
        """Three lines: ``label``'s mean ± std, ``random_label``'s, and :meth:`test`."""
        return "\n".join(
            [
                f"{label}: {mean_std(self.agent, digits)} over {len(self.agent)} {unit}",
                f"{random_label}: {mean_std(self.random, digits)} over {len(self.random)} {unit}",
                self.test(),
            ]
        )

    def test(self) -> str:
        """The test as the reports print it: ``Welch's t = 3.67 (df 4.0), two-sided p =
        0.021``."""
        if not math.isfinite(self.welch_df):
            return "Welch's t: not computed (a sample has fewer than 2 values)"
        return (
            f"Welch's t = {self.welch_t:.2f} (df {self.welch_df:.1f}), "
            f"two-sided p = {self.p_value:.2g}"
        )
