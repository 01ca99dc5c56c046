"""Paired tests for comparing two runs of a random attack on the same inputs (crossval of stochastic attacks).

A random attack's success rate and norms move from seed to seed, so fixed thresholds (5 points, 5%) would flag
the noise. Instead crossval asks whether two runs differ more than chance allows, on the same inputs:

- **McNemar's exact test** on per-sample success: under "no difference" the discordant inputs (broken by one run
  only) split 50/50, a two-sided binomial test on them;
- **Wilcoxon's signed-rank test** on the paired norms of the inputs both runs broke (minimisation attacks).

Each test runs at ``alpha / 2`` (Bonferroni), so two runs of one attack with two seeds (an A/A check) raise a flag
at most ``alpha`` of the time. Both tests come from scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "MIN_PAIRS", "mcnemar_p", "median_interval", "wilcoxon_p"]

#: The family-wise significance level of one comparison of two runs (success and norms together).
ALPHA = 0.05
#: Fewer paired norms than this give no Wilcoxon verdict (p = 1): the test has no power there.
MIN_PAIRS = 6


def mcnemar_p(success_a: np.ndarray, success_b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Two-sided exact McNemar p-value for paired per-sample successes (restricted to ``mask``); 1.0 without
    discordant inputs."""
    a, b = np.asarray(success_a, bool), np.asarray(success_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"success_a and success_b must have the same shape, got {a.shape} and {b.shape}")
    if mask is not None:
        a, b = a[np.asarray(mask, bool)], b[np.asarray(mask, bool)]
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def wilcoxon_p(norms_a: np.ndarray, norms_b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value for paired norms; 1.0 with fewer than ``MIN_PAIRS`` pairs or no
    non-zero difference."""
    a, b = np.asarray(norms_a, float), np.asarray(norms_b, float)
    if a.shape != b.shape:
        raise ValueError(f"norms_a and norms_b must have the same shape, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    if len(diff) < MIN_PAIRS or not np.any(diff != 0):
        return 1.0
    return float(stats.wilcoxon(diff).pvalue)


def median_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median of ``values`` (order statistics of the binomial);
    ``(nan, nan)`` when empty."""
    v = np.sort(np.asarray(values, float)[np.isfinite(values)])
    n = len(v)
    if n == 0:
        return float("nan"), float("nan")
    low = int(stats.binom.ppf((1 - confidence) / 2, n, 0.5))
    high = int(stats.binom.isf((1 - confidence) / 2, n, 0.5))
    return float(v[max(low - 1, 0)]), float(v[min(high, n - 1)])
