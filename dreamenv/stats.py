"""Statistics for comparing returns: Welch's t-test (SciPy's), as the reports state it.

Example:
    >>> t, df, p = welch_test(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    >>> round(p, 4)
    0.0213
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


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
