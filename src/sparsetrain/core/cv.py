"""Cross-validation folds and the summary of a metric over folds or seeds.

Pure numpy / scikit-learn / scipy. The folds are indices into the rows handed in (the caller
keeps the held-out test split out of them); stratified for classification, reshuffled per repeat,
the same for the same seed. The summary gives the mean, the sample standard deviation, the
standard error and a 95% interval from Student's t (few folds or seeds: the normal interval
would be too narrow).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

from sparsetrain.errors import SparsetrainError


def fold_indices(
    y: np.ndarray, task: str, folds: int, repeats: int = 1, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) for each of ``folds x repeats`` fits."""
    if folds < 2:
        raise SparsetrainError(f"evaluation.cv_folds={folds}: cross-validation needs at least 2 folds")
    if task == "classification":
        counts = np.bincount(np.asarray(y, dtype=np.int64))
        smallest = int(counts[counts > 0].min())
        if smallest < folds:
            raise SparsetrainError(
                f"evaluation.cv_folds={folds} is more than the {smallest} rows of the rarest class; "
                "lower evaluation.cv_folds"
            )
        splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    else:
        if len(y) < folds:
            raise SparsetrainError(f"evaluation.cv_folds={folds} is more than the {len(y)} rows; lower it")
        splitter = RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    yield from splitter.split(np.zeros((len(y), 1)), y)


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (ddof 1)
    sem: float  # standard error of the mean
    ci95_low: float
    ci95_high: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """Mean, std, standard error and the t-based 95% interval of ``values`` (folds or seeds)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = float(x.mean())
    if n == 1:
        return Summary(mean, 0.0, 0.0, mean, mean, 1)
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * sem
    return Summary(mean, std, sem, mean - half, mean + half, n)
