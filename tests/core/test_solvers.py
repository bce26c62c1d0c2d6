"""Oracle tests of the linear solver against scikit-learn, and its invariants.

Each objective is re-evaluated by ``solvers.objective`` in float64, so solvers whose tolerances
mean different things are compared on what they achieve.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import numpy as np
import pytest
import sklearn
import torch
from sklearn.linear_model import ElasticNet as SkElasticNet
from sklearn.linear_model import Lasso, LogisticRegression

from sparsetrain.core.penalties import L1, L2, ElasticNet, NoPenalty, make_penalty
from sparsetrain.core.solvers import SolverResult, lasso_path, objective, solve_linear, strength_max
from sparsetrain.errors import SparsetrainError


def sk_l1_logistic(**kwargs) -> LogisticRegression:
    """L1 logistic regression in the spelling of the installed scikit-learn (1.8 moved it to l1_ratio)."""
    new = tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (1, 8)
    return LogisticRegression(**({"l1_ratio": 1.0} if new else {"penalty": "l1"}), **kwargs)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 30))
    X[:, 1] = X[:, 0] + 0.1 * rng.standard_normal(120)  # correlated columns
    w = np.zeros(30)
    w[:6] = rng.standard_normal(6) * 2
    y = X @ w + 0.5 * rng.standard_normal(120) + 3.0
    return X, y


@pytest.fixture(scope="module")
def classification():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((150, 20))
    w = np.zeros(20)
    w[:5] = rng.standard_normal(5) * 2
    y = (X @ w + 0.5 + rng.standard_normal(150) > 0).astype(float)
    return X, y


@pytest.fixture(scope="module")
def multiclass():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((120, 8))
    y = np.argmax(X[:, :3] * 2 + rng.standard_normal((120, 3)), 1)
    return X, y


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# --- oracles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("l1_ratio", [1.0, 0.4])
def test_squared_loss_matches_sklearn_lasso_and_elasticnet(regression, fit_intercept, l1_ratio):
    X, y = regression
    strength = 0.05 * strength_max(X, y, "squared", fit_intercept)
    if l1_ratio == 1.0:
        penalty, sk = (
            L1(strength),
            Lasso(alpha=strength, fit_intercept=fit_intercept, tol=1e-12, max_iter=100_000),
        )
    else:
        penalty = ElasticNet(strength, l1_ratio)
        sk = SkElasticNet(
            alpha=strength, l1_ratio=l1_ratio, fit_intercept=fit_intercept, tol=1e-12, max_iter=100_000
        )
    ours = solve_linear(X, y, loss="squared", penalty=penalty, fit_intercept=fit_intercept, tol=1e-9)
    sk.fit(X, y)
    theirs = objective(X, y, sk.coef_, sk.intercept_, loss="squared", penalty=penalty)
    assert ours.converged and ours.kkt <= 1e-9
    assert rel(ours.objective, theirs) < 1e-4
    assert ours.objective <= theirs * (1 + 1e-9)
    np.testing.assert_allclose(ours.coef[0], sk.coef_, atol=1e-5)


def test_logistic_l1_matches_liblinear_without_intercept(classification):
    X, y = classification
    n = len(y)
    strength = 0.1 * strength_max(X, y, "logistic", fit_intercept=False)
    ours = solve_linear(X, y, loss="logistic", penalty=L1(strength), fit_intercept=False, tol=1e-9)
    sk = sk_l1_logistic(
        C=1 / (n * strength), solver="liblinear", fit_intercept=False, tol=1e-10, max_iter=10_000
    )
    sk.fit(X, y)
    theirs = objective(X, y, sk.coef_, None, loss="logistic", penalty=L1(strength))
    assert rel(ours.objective, theirs) < 1e-4
    assert ours.objective <= theirs * (1 + 1e-9)
    assert 0 < np.count_nonzero(ours.coef) < X.shape[1]


def test_logistic_l1_with_intercept_matches_saga(classification):
    X, y = classification
    n = len(y)
    strength = 0.1 * strength_max(X, y, "logistic")
    ours = solve_linear(X, y, loss="logistic", penalty=L1(strength), tol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = sk_l1_logistic(C=1 / (n * strength), solver="saga", tol=1e-12, max_iter=20_000).fit(X, y)
    theirs = objective(X, y, sk.coef_, sk.intercept_, loss="logistic", penalty=L1(strength))
    assert rel(ours.objective, theirs) < 1e-4
    assert ours.objective <= theirs * (1 + 1e-9)


def test_multinomial_objective_at_most_sagas(multiclass):
    X, y = multiclass
    n = len(y)
    strength = 0.1 * strength_max(X, y, "multinomial")
    ours = solve_linear(X, y, loss="multinomial", penalty=L1(strength), tol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = sk_l1_logistic(C=1 / (n * strength), solver="saga", tol=1e-12, max_iter=20_000).fit(X, y)
    theirs = objective(X, y, sk.coef_, sk.intercept_, loss="multinomial", penalty=L1(strength))
    assert ours.coef.shape == (3, X.shape[1]) and ours.intercept.shape == (3,)
    assert ours.objective <= theirs * (1 + 1e-6)
    assert rel(ours.objective, theirs) < 1e-4


def test_multi_output_squared_loss_is_one_lasso_per_column(regression):
    X, y = regression
    Y = np.column_stack([y, -2 * y + X[:, 3]])
    strength = 0.1
    ours = solve_linear(X, Y, loss="squared", penalty=L1(strength), tol=1e-9)
    for j in range(2):
        single = solve_linear(X, Y[:, j], loss="squared", penalty=L1(strength), tol=1e-9)
        np.testing.assert_allclose(ours.coef[j], single.coef[0], atol=1e-7)
        np.testing.assert_allclose(ours.intercept[j], single.intercept[0], atol=1e-7)


# --- strength_max ------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["squared", "logistic", "multinomial"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_strength_max_is_where_the_solution_becomes_zero(
    regression, classification, multiclass, loss, fit_intercept
):
    X, y = {"squared": regression, "logistic": classification, "multinomial": multiclass}[loss]
    smax = strength_max(X, y, loss, fit_intercept)
    at = solve_linear(X, y, loss=loss, penalty=L1(smax * (1 + 1e-9)), fit_intercept=fit_intercept, tol=1e-8)
    below = solve_linear(X, y, loss=loss, penalty=L1(0.9 * smax), fit_intercept=fit_intercept, tol=1e-8)
    assert np.count_nonzero(at.coef) == 0
    assert np.count_nonzero(below.coef) > 0


def test_strength_max_scales_with_the_elasticnet_l1_ratio(regression):
    X, y = regression
    smax = strength_max(X, y, "squared")
    assert strength_max(X, y, "squared", penalty=ElasticNet(1.0, 0.5)) == pytest.approx(2 * smax)
    zero = solve_linear(X, y, loss="squared", penalty=ElasticNet(2 * smax * (1 + 1e-9), 0.5), tol=1e-8)
    assert np.count_nonzero(zero.coef) == 0


# --- paths and warm starts ---------------------------------------------------------------------


def test_warm_started_path_matches_cold_solves_and_grows(regression):
    X, y = regression
    smax = strength_max(X, y, "squared")
    strengths = smax * np.geomspace(1.0, 1e-2, 12)
    path = lasso_path(X, y, strengths, loss="squared", tol=1e-9)
    nonzeros = [np.count_nonzero(r.coef) for r in path]
    assert nonzeros[0] == 0 and nonzeros[-1] > 10
    assert sum(b < a for a, b in itertools.pairwise(nonzeros)) <= 2  # roughly monotone
    for s, warm in zip(strengths[::4], path[::4]):
        cold = solve_linear(X, y, loss="squared", penalty=L1(s), tol=1e-9)
        assert rel(warm.objective, cold.objective) < 1e-9
        assert warm.converged


def test_logistic_path_with_elasticnet_factory_matches_cold(classification):
    X, y = classification
    smax = strength_max(X, y, "logistic", penalty=ElasticNet(1.0, 0.5))
    strengths = smax * np.geomspace(1.0, 0.05, 6)
    path = lasso_path(
        X, y, strengths, loss="logistic", penalty_factory=lambda s: ElasticNet(s, 0.5), tol=1e-8
    )
    cold = solve_linear(X, y, loss="logistic", penalty=ElasticNet(strengths[-1], 0.5), tol=1e-8)
    assert rel(path[-1].objective, cold.objective) < 1e-8


def test_warm_start_from_the_solution_needs_no_work(classification):
    X, y = classification
    pen = L1(0.02)
    first = solve_linear(X, y, loss="logistic", penalty=pen, tol=1e-8)
    again = solve_linear(
        X, y, loss="logistic", penalty=pen, tol=1e-8, coef0=first.coef, intercept0=first.intercept
    )
    assert again.n_iter == 0 and again.objective == pytest.approx(first.objective, rel=1e-12)


# --- other penalties, result, options ------------------------------------------------------------


@pytest.mark.parametrize("penalty", [L2(0.1), NoPenalty(), make_penalty("group_lasso", 0.05)])
def test_other_proximal_penalties_converge(multiclass, penalty):
    X, y = multiclass
    res = solve_linear(X, y, loss="multinomial", penalty=penalty, tol=1e-7)
    assert res.converged and res.kkt <= 1e-7
    if penalty.name == "group_lasso":  # input groups: whole columns vanish together
        zero_cols = (res.coef == 0).all(0)
        assert zero_cols.any() and ((res.coef == 0).any(0) == zero_cols).all()


def test_l2_squared_loss_is_ridge(regression):
    X, y = regression
    res = solve_linear(X, y, loss="squared", penalty=L2(0.3), fit_intercept=False, tol=1e-10)
    ridge = np.linalg.solve(X.T @ X / len(y) + 0.3 * np.eye(X.shape[1]), X.T @ y / len(y))
    np.testing.assert_allclose(res.coef[0], ridge, atol=1e-8)


def test_penalty_without_a_proximal_operator_is_refused(classification):
    X, y = classification
    with pytest.raises(SparsetrainError, match="l0"):
        solve_linear(X, y, loss="logistic", penalty=make_penalty("l0", 0.1))


def test_result_fields_and_objective_agree(classification):
    X, y = classification
    res = solve_linear(X, y, loss="logistic", penalty=L1(0.02), tol=1e-8)
    assert isinstance(res, SolverResult) and res.seconds > 0 and res.n_iter > 0
    assert res.objective == pytest.approx(
        objective(X, y, res.coef, res.intercept, loss="logistic", penalty=L1(0.02))
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.n_iter = 3


def test_labels_other_than_zero_and_one(classification):
    X, y = classification
    a = solve_linear(X, y, loss="logistic", penalty=L1(0.02))
    b = solve_linear(X, np.where(y > 0, "yes", "no"), loss="logistic", penalty=L1(0.02))
    np.testing.assert_allclose(a.coef, b.coef)


def test_max_iter_stops_without_convergence(classification):
    X, y = classification
    res = solve_linear(X, y, loss="logistic", penalty=L1(0.005), tol=1e-12, max_iter=1)
    assert not res.converged and res.kkt > 1e-12


def test_float32_and_thread_settings(classification):
    X, y = classification
    before = torch.get_num_threads()
    a = solve_linear(X, y, loss="logistic", penalty=L1(0.02), tol=1e-5, dtype=torch.float32, n_threads=1)
    b = solve_linear(X, y, loss="logistic", penalty=L1(0.02), tol=1e-8, n_threads=None)
    assert torch.get_num_threads() == before
    assert rel(a.objective, b.objective) < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(multiclass):
    X, y = multiclass
    cpu = solve_linear(X, y, loss="multinomial", penalty=L1(0.02), tol=1e-8)
    gpu = solve_linear(X, y, loss="multinomial", penalty=L1(0.02), tol=1e-8, device="cuda")
    assert rel(gpu.objective, cpu.objective) < 1e-8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "hinge"}, "loss 'hinge' is unknown"),
        ({"y": np.zeros(150)}, "one class"),
        ({"y": np.arange(150) % 3}, "exactly two classes"),
        ({"tol": 0.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"n_threads": 0}, "n_threads"),
        ({"X": np.full((150, 3), np.nan)}, "NaN"),
        ({"y": np.zeros(7)}, "rows"),
    ],
)
def test_errors_are_one_line_sparsetrain_errors(classification, kwargs, match):
    X, y = classification
    args = {"X": X, "y": y, "loss": "logistic", "penalty": L1(0.01), **kwargs}
    with pytest.raises(SparsetrainError, match=match):
        solve_linear(args.pop("X"), args.pop("y"), **args)


def test_empty_path_is_refused(regression):
    X, y = regression
    with pytest.raises(SparsetrainError, match="strengths"):
        lasso_path(X, y, [], loss="squared")
