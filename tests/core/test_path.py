"""The regularization path (sparsetrain.core.path): lambda_max by the KKT condition, the log grid,
the warm-started path against cold solves, the CV at fixed strengths, and the 1-SE rule by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsetrain.core.path import (
    CVPath,
    Preprocess,
    choose,
    cross_validate_path,
    fit_fold,
    fit_path,
    lambda_max,
    loss_for,
    one_se_index,
    path_penalty,
    score,
    strength_grid,
    to_network,
)
from sparsetrain.core.solvers import objective, solve_linear
from sparsetrain.errors import SparsetrainError

PENALTIES = [("l1", {}), ("elasticnet", {"l1_ratio": 0.3}), ("group_lasso", {})]


@pytest.fixture(scope="module")
def digits():
    """400 standardized digits rows (10 classes), and a binary task made of its 3s against 8s."""
    from digits_data import standardized_digits

    X, y = standardized_digits(seed=0)[:2]
    X, y = X[:400].astype(np.float64), y[:400]
    binary = np.isin(y, (3, 8))
    return X, y, X[binary], (y[binary] == 8).astype(np.int64)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 20))
    w = np.zeros(20)
    w[:5] = (2.0, -1.5, 1.0, 0.8, -0.5)
    return X, X @ w + 0.3 * rng.standard_normal(150) + 2.0


def _problem(name, digits, regression):
    if name == "squared":
        return regression
    X, y, Xb, yb = digits
    return (Xb, yb) if name == "logistic" else (X, y)


@pytest.mark.parametrize("loss", ["squared", "logistic", "multinomial"])
@pytest.mark.parametrize("penalty,options", PENALTIES, ids=[p for p, _ in PENALTIES])
def test_lambda_max_zeroes_every_weight_and_a_slightly_smaller_strength_does_not(
    loss, penalty, options, digits, regression
):
    X, y = _problem(loss, digits, regression)
    family = path_penalty(penalty, **options)
    top = lambda_max(X, y, loss=loss, penalty=family)
    at = solve_linear(X, y, loss=loss, penalty=family(top), tol=1e-9)
    below = solve_linear(X, y, loss=loss, penalty=family(0.99 * top), tol=1e-9)
    assert at.converged and below.converged
    assert np.count_nonzero(at.coef) == 0
    assert np.count_nonzero(below.coef) > 0


def test_lambda_max_closed_forms(regression, digits):
    """Squared loss: |X'(y - mean y)|_inf / n for L1, that / l1_ratio for elasticnet; group lasso
    on a multinomial model: the largest column norm of the gradient at zero over sqrt(classes)."""
    X, y = regression
    grad = X.T @ (y - y.mean()) / len(y)
    assert lambda_max(X, y, loss="squared", penalty=path_penalty("l1")) == pytest.approx(np.abs(grad).max())
    enet = path_penalty("elasticnet", l1_ratio=0.25)
    assert lambda_max(X, y, loss="squared", penalty=enet) == pytest.approx(np.abs(grad).max() / 0.25)
    X, y = digits[:2]
    onehot = np.eye(10)[y]
    G = (onehot.mean(0) - onehot).T @ X / len(y)  # gradient of the mean multinomial loss at zero weights
    expected = np.linalg.norm(G, axis=0).max() / math.sqrt(10)
    group = path_penalty("group_lasso")
    assert lambda_max(X, y, loss="multinomial", penalty=group) == pytest.approx(expected)


def test_strength_grid_is_log_spaced_from_lambda_max_down_to_min_ratio():
    grid = strength_grid(0.5, 7, 1e-3)
    assert len(grid) == 7 and grid[0] == 0.5 and grid[-1] == pytest.approx(0.5e-3)
    ratios = grid[1:] / grid[:-1]
    assert np.allclose(ratios, ratios[0]) and ratios[0] < 1
    for bad in ((0.5, 1, 1e-3), (0.5, 7, 1.0), (0.0, 7, 1e-3)):
        with pytest.raises(SparsetrainError):
            strength_grid(*bad)


@pytest.mark.parametrize("loss", ["squared", "logistic", "multinomial"])
@pytest.mark.parametrize("penalty,options", PENALTIES, ids=[p for p, _ in PENALTIES])
def test_warm_started_path_matches_cold_solves(loss, penalty, options, digits, regression):
    X, y = _problem(loss, digits, regression)
    family = path_penalty(penalty, **options)
    strengths = strength_grid(lambda_max(X, y, loss=loss, penalty=family), 6, 1e-2)
    path = fit_path(X, y, strengths, loss=loss, penalty=family, tol=1e-9)
    assert path.converged.all() and path.nonzeros[0] == 0 and path.nonzeros[-1] > 0
    for i, s in enumerate(strengths):
        cold = solve_linear(X, y, loss=loss, penalty=family(s), tol=1e-9)
        warm = objective(X, y, path.coef[i], path.intercept[i], loss=loss, penalty=family(s))
        assert warm == pytest.approx(cold.objective, rel=1e-9, abs=1e-12)
        np.testing.assert_allclose(path.coef[i], cold.coef, atol=1e-4)
        assert np.array_equal(path.coef[i] != 0, cold.coef != 0)


def test_one_se_rule_by_hand():
    """Accuracy (larger is better): the best mean is 0.90 at strength 0.125 with SE 0.025, so
    the bound is 0.875; the means at or above it are at 0.25 (0.88), 0.125 and 0.0625 (0.89): the
    largest of those strengths is 0.25. 0.5 (0.80) is out."""
    strengths = [1.0, 0.5, 0.25, 0.125, 0.0625]
    mean = [0.50, 0.80, 0.88, 0.90, 0.89]
    sem = [0.05, 0.03, 0.02, 0.025, 0.02]
    c = choose(strengths, mean, sem, "1se", maximize=True)
    assert (c.best, c.one_se, c.chosen) == (3, 2, 2)
    assert choose(strengths, mean, sem, "min", maximize=True).chosen == 3
    # the bound uses the best strength's SE only: a smaller one there excludes 0.25
    assert one_se_index(strengths, mean, [0.05, 0.03, 0.02, 0.015, 0.02], maximize=True) == 3


def test_one_se_rule_by_hand_for_an_error_and_non_contiguous_sets():
    """rmse (smaller is better): best 1.00 at 0.1 (SE 0.10), bound 1.10; within it 0.8 (1.08), 0.1,
    0.05 (1.05), not 0.4 (1.20): as cv.glmnet, the largest strength within the bound, 0.8, even
    though 0.4 between it and the best is out."""
    strengths = [1.6, 0.8, 0.4, 0.2, 0.1, 0.05]
    mean = [2.0, 1.08, 1.20, 1.15, 1.00, 1.05]
    sem = [0.1, 0.05, 0.05, 0.05, 0.10, 0.05]
    c = choose(strengths, mean, sem, "1se", maximize=False)
    assert (c.best, c.one_se) == (4, 1)


def test_ties_go_to_the_largest_strength():
    strengths = [1.0, 0.5, 0.25, 0.125]
    mean = [0.5, 0.9, 0.9, 0.8 + 0.1]  # equal as numbers, 0.8 + 0.1 differing in the last bit
    c = choose(strengths, mean, [0.0, 0.0, 0.0, 0.0], "min", maximize=True)
    assert c.best == 1 and c.one_se == 1
    with pytest.raises(SparsetrainError, match="path.choose"):
        choose(strengths, mean, [0.0] * 4, "max", maximize=True)


def test_cv_standard_error_is_across_folds_of_a_repeat_averaged_over_repeats():
    scores = np.array([[[0.9, 0.5], [0.8, 0.6], [0.7, 0.4]], [[0.8, 0.5], [0.8, 0.5], [0.8, 0.5]]])
    cv = CVPath(strengths=np.array([1.0, 0.5]), scores=scores, seconds=np.zeros((6, 2)), maximize=True)
    np.testing.assert_allclose(cv.mean, scores.mean(axis=(0, 1)))
    first = np.array([np.std([0.9, 0.8, 0.7], ddof=1), np.std([0.5, 0.6, 0.4], ddof=1)]) / math.sqrt(3)
    np.testing.assert_allclose(cv.sem, first / 2)  # the second repeat's folds agree: SE 0


def test_a_fold_is_fitted_on_its_training_rows_only(digits):
    """The fold's standardizer has the statistics of its training rows; its held-out rows never
    reach it or its path (scaling them by 1000 changes nothing); the CV scores are the fold
    paths' scores on the held-out rows."""
    from sparsetrain.core.cv import fold_indices

    X, y = digits[:2]
    family = path_penalty("l1")
    strengths = strength_grid(lambda_max(X, y, loss="multinomial", penalty=family), 4, 0.05)
    folds = list(fold_indices(y, "classification", 3, 1, 0))
    kwargs = {"loss": "multinomial", "penalty": family, "preprocess": Preprocess(), "tol": 1e-7}
    cv = cross_validate_path(X, y, strengths, folds, **kwargs)
    for k, (fit_rows, held_rows) in enumerate(folds):
        fitted, path = fit_fold(X, y, fit_rows, strengths, **kwargs)
        np.testing.assert_allclose(fitted.standardizer.mean_, X[fit_rows].mean(0), atol=1e-5)
        scale = X[fit_rows].std(0)
        np.testing.assert_allclose(fitted.standardizer.scale_, np.where(scale > 0, scale, 1.0), rtol=1e-5)
        X_bad = X.copy()
        X_bad[held_rows] *= 1000.0
        fitted_bad, path_bad = fit_fold(X_bad, y, fit_rows, strengths, **kwargs)
        np.testing.assert_array_equal(path_bad.coef, path.coef)
        np.testing.assert_array_equal(fitted_bad.standardizer.mean_, fitted.standardizer.mean_)
        expected = score(path, fitted.transform(X[held_rows]), y[held_rows], "multinomial")
        np.testing.assert_allclose(cv.scores[0, k], expected)


def test_score_and_network_agree_with_the_solution(digits):
    """The registered network predicts what the path's solution predicts; a binary solution
    becomes two logits (0, z) with softmax = sigmoid(z) and no extra nonzero weight."""
    _, _, Xb, yb = digits
    family = path_penalty("l1")
    strengths = strength_grid(lambda_max(Xb, yb, loss="logistic", penalty=family), 5, 0.01)
    path = fit_path(Xb, yb, strengths, loss="logistic", penalty=family, tol=1e-8)
    net = to_network(path.coef[-1], path.intercept[-1], n_outputs=2)
    with torch.no_grad():
        logits = net(torch.as_tensor(Xb, dtype=torch.float32)).numpy()
    accuracy = (logits.argmax(1) == yb).mean()
    assert accuracy == pytest.approx(score(path, Xb, yb, "logistic")[-1])
    z = Xb @ path.coef[-1, 0] + path.intercept[-1, 0]
    np.testing.assert_allclose(torch.softmax(torch.as_tensor(logits), 1)[:, 1].numpy(), 1 / (1 + np.exp(-z)),
                               atol=1e-5)
    assert int(torch.count_nonzero(net[1].weight)) == path.nonzeros[-1]


@pytest.mark.parametrize(
    "name,options,key",
    [
        ("none", {}, "sparsity.penalty"),
        ("l2", {}, "sparsity.penalty"),
        ("l0", {}, "sparsity.penalty"),
        ("elasticnet", {"l1_ratio": 0.0}, "sparsity.l1_ratio"),
        ("group_lasso", {"groups": "neuron"}, "sparsity.groups"),
    ],
)
def test_penalties_without_a_path_are_one_line_errors_naming_the_key(name, options, key):
    with pytest.raises(SparsetrainError) as error:
        path_penalty(name, **options)
    assert str(error.value).startswith(key) and "\n" not in str(error.value)


def test_loss_for_task():
    assert loss_for("regression", None) == "squared"
    assert loss_for("classification", 2) == "logistic"
    assert loss_for("classification", 10) == "multinomial"
