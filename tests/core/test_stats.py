"""The verdict logic on constructed inputs: a clear effect holds, none is inconclusive, the
opposite does not hold; margins; deterministic effects."""

from __future__ import annotations

import numpy as np
import pytest

from sparsetrain.core.stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, better, combine, differ, within

RNG = np.random.default_rng(0)


def test_a_clear_effect_holds():
    v = better([0.05, 0.04, 0.06, 0.05, 0.045])
    assert v.verdict == HOLDS and v.p_value < 0.001 and v.n == 5
    assert v.ci95[0] > 0 and "paired t test" in v.test


def test_no_effect_is_inconclusive():
    assert better([0.01, -0.02, 0.015, -0.01, 0.005]).verdict == INCONCLUSIVE


def test_the_opposite_effect_does_not_hold():
    assert better([-0.05, -0.04, -0.06, -0.05, -0.045]).verdict == DOES_NOT_HOLD


def test_a_deterministic_effect_is_decided_by_its_sign():
    assert better([0.3] * 5).verdict == HOLDS and better([0.3] * 5).p_value == 0.0
    assert better([-0.3] * 5).verdict == DOES_NOT_HOLD
    assert better([0.0] * 5).verdict == INCONCLUSIVE


def test_two_seeds_can_still_decide_but_one_cannot():
    assert better([0.05]).verdict == INCONCLUSIVE
    assert better([0.05, 0.051]).verdict == HOLDS


@pytest.mark.parametrize(
    "loss, verdict",
    [([0.002, 0.003, 0.001, 0.002, 0.004], HOLDS), ([0.03, 0.04, 0.035, 0.03, 0.032], DOES_NOT_HOLD),
     ([0.0, 0.02, -0.01, 0.03, 0.01], INCONCLUSIVE)],
)
def test_within_a_margin(loss, verdict):
    assert within(loss, margin=0.01).verdict == verdict


def test_differ_is_two_sided():
    assert differ([-0.05, -0.04, -0.06]).verdict == HOLDS
    assert differ(RNG.normal(0, 0.01, 5)).verdict == INCONCLUSIVE


def test_combine_needs_every_part():
    yes, no, maybe = better([1.0, 1.1]), better([-1.0, -1.1]), better([0.1, -0.1])
    assert combine([yes, yes]) == HOLDS
    assert combine([yes, maybe]) == INCONCLUSIVE
    assert combine([yes, no]) == DOES_NOT_HOLD
