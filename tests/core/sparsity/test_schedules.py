"""Density schedules: Zhu & Gupta's cubic, constant; frozen and picklable."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from sparsetrain.core.sparsity.schedules import ConstantSchedule, CubicSchedule, Schedule
from sparsetrain.errors import SparsetrainError


def test_cubic_schedule_follows_zhu_and_gupta():
    s = CubicSchedule(initial_density=1.0, final_density=0.1, start=0.2, end=0.6)
    assert s(0.0) == s(0.2) == 1.0
    assert s(0.6) == s(1.0) == 0.1
    # halfway through the window: d_f + (d_i - d_f) * (1 - 1/2)^3
    assert s(0.4) == pytest.approx(0.1 + 0.9 * 0.125)
    values = [s(t) for t in np.linspace(0, 1, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # only ever sparser
    # it prunes fast early and slowly near the target
    assert s(0.2) - s(0.3) > 10 * (s(0.5) - s(0.6))


def test_constant_schedule():
    s = ConstantSchedule(0.3)
    assert s(0.0) == s(0.7) == 0.3 and s.end == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(final_density=0.0),
        dict(final_density=1.5),
        dict(final_density=0.5, initial_density=0.4),
        dict(final_density=0.1, start=0.5, end=0.5),
        dict(final_density=0.1, start=-0.1),
        dict(final_density=0.1, end=1.2),
    ],
)
def test_invalid_schedules_fail_with_the_key(kwargs):
    with pytest.raises(SparsetrainError, match="density|prune_"):
        CubicSchedule(**kwargs)


def test_schedules_are_frozen_picklable_and_match_the_protocol():
    for s in (CubicSchedule(final_density=0.2), ConstantSchedule(0.5)):
        assert isinstance(s, Schedule)
        assert pickle.loads(pickle.dumps(s)) == s
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.end = 0.3  # type: ignore[misc]
