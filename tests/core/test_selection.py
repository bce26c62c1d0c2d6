"""Greedy forward selection: planted supports recovered, the least-squares step checked against
brute force, the stopping rules, the exact zeros of the widened network, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsetrain.core.data import Splits
from sparsetrain.core.models import build_model, prunable_weights
from sparsetrain.core.selection import (
    PATIENCE,
    embed_columns,
    f1_of,
    forward_select,
    log_step,
    restrict_splits,
)
from sparsetrain.errors import SparsetrainError

SUPPORT = (3, 11, 17, 28, 36)  # the planted informative columns of 40


def planted(task: str, seed: int = 0, n: int = 600, d: int = 40, n_classes: int = 3):
    """Gaussian features; the target depends on the SUPPORT columns only: a linear model with
    noise (regression) or a multinomial logistic model whose labels are drawn from its
    probabilities (classification). Train / validation: the first 80% / the rest."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if task == "regression":
        coef = rng.choice([-1.0, 1.0], len(SUPPORT)) * rng.uniform(1.0, 2.0, len(SUPPORT))
        y = X[:, SUPPORT] @ coef + 0.5 * rng.standard_normal(n)
    else:
        W = 2.0 * rng.standard_normal((n_classes, len(SUPPORT)))
        Z = X[:, SUPPORT] @ W.T
        P = np.exp(Z - Z.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        y = np.array([rng.choice(n_classes, p=p) for p in P])
    cut = int(0.8 * n)
    return X[:cut], y[:cut], X[cut:], y[cut:]


def precision_recall(features) -> tuple[float, float]:
    hits = len(set(features) & set(SUPPORT))
    return hits / max(len(features), 1), hits / len(SUPPORT)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_planted_support_is_recovered_at_max_features(task):
    X, y, Xv, yv = planted(task)
    result = forward_select(X, y, Xv, yv, task=task, max_features=len(SUPPORT))
    assert sorted(result.features) == list(SUPPORT)
    assert precision_recall(result.features) == (1.0, 1.0)
    assert result.stopped == "max_features"


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_without_max_features_validation_chooses_the_planted_support(task):
    X, y, Xv, yv = planted(task)
    result = forward_select(X, y, Xv, yv, task=task)
    assert set(SUPPORT) <= set(result.features)
    precision, recall = precision_recall(result.features)
    assert recall == 1.0 and precision >= 0.7
    # the search ran `patience` steps past the kept prefix, none with a better validation loss
    best = min(s.val_loss for s in result.steps)
    assert len(result.steps) == len(result.features) + PATIENCE
    assert result.steps[len(result.features) - 1].val_loss == best
    assert "no better validation loss" in result.stopped


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_max_features_is_respected(task, k):
    X, y, Xv, yv = planted(task, n=300)
    result = forward_select(X, y, Xv, yv, task=task, max_features=k)
    assert len(result.features) == len(set(result.features)) == len(result.steps) == k
    assert [s.step for s in result.steps] == list(range(1, k + 1))


def test_least_squares_steps_are_the_best_refit_by_brute_force():
    """Exact forward stepwise: each added column is the one whose least-squares refit (with an
    intercept) has the smallest training residual, found here by refitting every candidate;
    on correlated columns (a common factor), where orthogonal matching pursuit's ranking by
    |x_j' r| (normalized columns) picks another order."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 15))
    X = X + 1.5 * X[:, :1]
    y = X[:, [2, 5, 9]] @ np.array([1.0, -2.0, 1.5]) + rng.standard_normal(120)
    result = forward_select(X, y, task="regression", max_features=6)
    active: list[int] = []
    for step in result.steps:
        def rss(cols):
            A = np.column_stack([X[:, cols], np.ones(len(X))])
            return float(((y - A @ np.linalg.lstsq(A, y, rcond=None)[0]) ** 2).sum())
        candidates = {j: rss(active + [j]) for j in range(X.shape[1]) if j not in active}
        assert step.feature == min(candidates, key=candidates.get)
        assert step.train_loss == pytest.approx(candidates[step.feature] / len(X), rel=1e-9)
        active.append(step.feature)
    Xc = X - X.mean(0)
    Xc /= np.linalg.norm(Xc, axis=0)
    omp: list[int] = []
    residual = y - y.mean()
    for _ in result.steps:
        score = np.abs(Xc.T @ residual)
        score[omp] = -1.0
        omp.append(int(score.argmax()))
        residual = y - y.mean() - Xc[:, omp] @ np.linalg.lstsq(Xc[:, omp], y - y.mean(), rcond=None)[0]
    assert omp != active


def test_constant_and_duplicate_columns_never_enter():
    X, y, Xv, yv = planted("regression", n=200)
    d = X.shape[1]
    widen = lambda A: np.column_stack([A, A[:, SUPPORT[0]], np.full(len(A), 7.0)])  # noqa: E731
    result = forward_select(widen(X), y, widen(Xv), yv, task="regression", max_features=d + 2)
    # the copy of column SUPPORT[0] (a tie: the lower index enters) and the constant never do
    assert SUPPORT[0] in result.features and d not in result.features and d + 1 not in result.features
    assert len(result.features) == d and result.stopped == "no column left that adds anything"


def test_deterministic():
    for task in ("regression", "classification"):
        X, y, Xv, yv = planted(task, seed=1)
        first = forward_select(X, y, Xv, yv, task=task)
        assert forward_select(X, y, Xv, yv, task=task) == first


def test_a_step_is_one_log_line(caplog):
    X, y, Xv, yv = planted("classification", n=300)
    with caplog.at_level("INFO", logger="sparsetrain.core.selection"):
        result = forward_select(X, y, Xv, yv, task="classification", max_features=3, on_step=log_step,
                                feature_names=[f"c{j}" for j in range(X.shape[1])])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith(f"forward selection 1/3: + c{result.features[0]} ")
    assert "val_accuracy" in lines[0]


@pytest.mark.parametrize("bad", [41, 1000])
def test_more_features_than_columns_is_one_line_naming_the_key(bad):
    X, y, Xv, yv = planted("regression", n=100)
    with pytest.raises(SparsetrainError) as error:
        forward_select(X, y, Xv, yv, task="regression", max_features=bad)
    message = str(error.value)
    assert "\n" not in message
    assert f"sparsity.max_features={bad}" in message and "40 input features" in message


def test_choosing_on_an_empty_validation_split_is_refused():
    X, y, _, _ = planted("regression", n=100)
    with pytest.raises(SparsetrainError, match="data.val_size"):
        forward_select(X, y, X[:0], y[:0], task="regression")


def test_embedding_gives_the_same_outputs_with_exact_zeros():
    rng = np.random.default_rng(0)
    features = (7, 2, 5)
    torch.manual_seed(0)
    small = build_model("linear", len(features), 3)
    full = embed_columns(small, features, 9)
    (W,) = prunable_weights(full)
    unselected = [j for j in range(9) if j not in features]
    assert W.shape == (3, 9) and bool((W[:, unselected] == 0).all())
    assert full.arch == {**small.arch, "n_features": 9}  # what the export rebuilds
    assert bool((W[:, list(features)] != 0).all())
    X = torch.as_tensor(rng.standard_normal((20, 9)), dtype=torch.float32)
    torch.testing.assert_close(full(X), small(X[:, list(features)]), rtol=0, atol=1e-6)
    splits = Splits(X.numpy(), np.zeros(20), X.numpy()[:4], np.zeros(4), X.numpy()[:5], np.zeros(5))
    narrow = restrict_splits(splits, features)
    assert narrow.X_train.shape == (20, 3) and np.array_equal(narrow.X_test, splits.X_test[:, list(features)])


def test_embedding_refuses_a_network_that_is_not_linear_over_the_selection():
    with pytest.raises(SparsetrainError, match="model.kind=linear"):
        embed_columns(build_model("linear", 4, 2), (0, 1, 2), 10)


def test_f1_of():
    assert f1_of(1.0, 1.0) == 1.0
    assert f1_of(0.0, 0.0) == 0.0
    assert f1_of(0.5, 1.0) == pytest.approx(2 / 3)
