"""Verdicts from paired measurements: is a claimed effect in the data?

Each claim of the study compares settings measured on the same seeds (same data split, same
initialization stream), so the measurements are paired and the test is on the per-seed
differences ``d_i`` (oriented so that a positive ``d`` is what the claim says). The paired t test
is used: with 5 seeds the exact Wilcoxon signed-rank test cannot reach p < 0.05 two-sided (its
smallest p is 1/16), so it could never confirm anything. A claim is

- ``holds`` when the effect is significant in the claimed direction (p < alpha),
- ``does not hold`` when it is significant in the other direction, or, for a claim of the kind
  "at most ``margin`` worse", significantly worse than the margin,
- ``inconclusive`` otherwise: the data neither confirm nor refute it at this alpha.

When every difference is the same (a deterministic effect, e.g. L2 never gives an exact zero),
the t statistic is undefined; the sign of that common difference decides, with p reported as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from sparsetrain.core.cv import summarize

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
ALPHA = 0.05
TEST_NAME = "paired t test over seeds"


@dataclass(frozen=True)
class Verdict:
    verdict: str
    test: str
    p_value: float
    mean_difference: float
    ci95: tuple[float, float]
    n: int
    detail: str


def _t_test(d: np.ndarray, alternative: str) -> float:
    """p of the one-sample t test of ``d`` against 0; a constant ``d`` gives 0 or 1."""
    if np.allclose(d, d[0]):
        if d[0] == 0:
            return 1.0
        greater = d[0] > 0
        return 0.0 if (alternative == "greater") == greater or alternative == "two-sided" else 1.0
    return float(stats.ttest_1samp(d, 0.0, alternative=alternative).pvalue)


def _verdict(verdict: str, d: np.ndarray, p: float, detail: str) -> Verdict:
    s = summarize(d)
    return Verdict(verdict, TEST_NAME, p, s.mean, (s.ci95_low, s.ci95_high), s.n, detail)


def better(differences: Sequence[float], alpha: float = ALPHA) -> Verdict:
    """The claim: the differences are positive (the claimed setting is better)."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return _verdict(INCONCLUSIVE, np.r_[d, d], 1.0, "fewer than two seeds")
    p_greater, p_less = _t_test(d, "greater"), _t_test(d, "less")
    if p_greater < alpha:
        return _verdict(HOLDS, d, p_greater, f"one-sided p = {p_greater:.3g} < {alpha}")
    if p_less < alpha:
        detail = f"the opposite effect: one-sided p = {p_less:.3g} < {alpha}"
        return _verdict(DOES_NOT_HOLD, d, p_less, detail)
    return _verdict(INCONCLUSIVE, d, min(p_greater, p_less), f"no significant effect at alpha {alpha}")


def within(differences: Sequence[float], margin: float, alpha: float = ALPHA) -> Verdict:
    """The claim: the loss ``d`` (how much worse the claimed setting is) stays below ``margin``
    (non-inferiority). Holds when ``d < margin`` significantly, does not hold when ``d > margin``
    significantly."""
    d = np.asarray(differences, dtype=np.float64)
    shifted = margin - d
    result = better(shifted, alpha)
    s = summarize(d) if len(d) else None
    detail = f"margin {margin:g}: " + result.detail.replace("the opposite effect", "worse than the margin")
    mean = s.mean if s else math.nan
    ci = (s.ci95_low, s.ci95_high) if s else (math.nan, math.nan)
    test = f"{TEST_NAME} (non-inferiority)"
    return Verdict(result.verdict, test, result.p_value, mean, ci, result.n, detail)


def differ(differences: Sequence[float], alpha: float = ALPHA) -> Verdict:
    """The claim: the settings differ (either way): two-sided test."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return _verdict(INCONCLUSIVE, np.r_[d, d], 1.0, "fewer than two seeds")
    p = _t_test(d, "two-sided")
    verdict = HOLDS if p < alpha else INCONCLUSIVE
    return _verdict(verdict, d, p, f"two-sided p = {p:.3g} {'<' if p < alpha else '>='} {alpha}")


def combine(verdicts: Sequence[Verdict]) -> str:
    """A claim made of several comparisons: holds when all hold, does not hold when any does
    not, inconclusive otherwise."""
    names = [v.verdict for v in verdicts]
    if names and all(n == HOLDS for n in names):
        return HOLDS
    if DOES_NOT_HOLD in names:
        return DOES_NOT_HOLD
    return INCONCLUSIVE
