"""Folds cover every row once per repeat, stratified, seeded; the summary is Student's interval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sparsetrain.core.cv import fold_indices, summarize
from sparsetrain.errors import SparsetrainError


def test_each_repeat_holds_out_every_row_once_and_folds_are_stratified():
    y = np.repeat([0, 1, 2], [30, 20, 10])
    folds = list(fold_indices(y, "classification", folds=5, repeats=2, seed=3))
    assert len(folds) == 10
    for repeat in (folds[:5], folds[5:]):
        held = np.concatenate([test for _, test in repeat])
        assert sorted(held) == list(range(60))
        for train, test in repeat:
            assert not set(train) & set(test)
            assert np.bincount(y[test]).tolist() == [6, 4, 2]
    assert not np.array_equal(folds[0][1], folds[5][1])  # reshuffled per repeat
    again = list(fold_indices(y, "classification", folds=5, repeats=2, seed=3))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


def test_regression_folds_and_bad_counts():
    assert len(list(fold_indices(np.arange(10.0), "regression", folds=5))) == 5
    with pytest.raises(SparsetrainError, match="rarest class"):
        list(fold_indices(np.array([0] * 10 + [1] * 2), "classification", folds=3))
    with pytest.raises(SparsetrainError, match="at least 2 folds"):
        list(fold_indices(np.arange(10.0), "regression", folds=1))


def test_summary_is_the_t_interval():
    values = [0.90, 0.92, 0.91, 0.95, 0.89]
    s = summarize(values)
    sem = np.std(values, ddof=1) / np.sqrt(5)
    assert s.mean == pytest.approx(np.mean(values)) and s.sem == pytest.approx(sem)
    assert s.ci95_high - s.mean == pytest.approx(stats.t.ppf(0.975, 4) * sem)
    assert summarize([0.5]).ci95_low == 0.5
