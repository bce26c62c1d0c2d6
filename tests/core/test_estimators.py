"""The scikit-learn estimators: sklearn's own estimator checks, plus agreement with the solver."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sparsetrain.core.estimators import SparseLinearRegression, SparseLogisticRegression
from sparsetrain.core.penalties import L1, ElasticNet
from sparsetrain.core.solvers import solve_linear
from sparsetrain.errors import SparsetrainError


@parametrize_with_checks([SparseLogisticRegression(), SparseLinearRegression()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits3():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 12)) * 2
    y = np.repeat(["cat", "dog", "emu"], 40)
    X = centers[np.repeat(np.arange(3), 40)] + rng.standard_normal((120, 12))
    return X, y


def test_multinomial_classifier_shapes_probabilities_and_labels(digits3):
    X, y = digits3
    clf = SparseLogisticRegression(strength=0.02).fit(X, y)
    assert clf.coef_.shape == (3, 12) and clf.intercept_.shape == (3,)
    assert list(clf.classes_) == ["cat", "dog", "emu"] and clf.n_features_in_ == 12
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert (clf.predict(X) == clf.classes_[proba.argmax(1)]).all()
    assert clf.score(X, y) > 0.9
    assert isinstance(clf.n_iter_, int) and clf.n_iter_ > 0


def test_binary_classifier_is_the_solver(digits3):
    X, y = digits3
    keep = y != "emu"
    X, y = X[keep], y[keep]
    clf = SparseLogisticRegression(strength=0.05, tol=1e-9).fit(X, y)
    res = solve_linear(X, (y == "dog").astype(float), loss="logistic", penalty=L1(0.05), tol=1e-9)
    assert clf.coef_.shape == (1, 12)
    np.testing.assert_allclose(clf.coef_, res.coef, atol=1e-8)
    np.testing.assert_allclose(clf.decision_function(X), X @ res.coef[0] + res.intercept[0], atol=1e-8)
    assert set(clf.predict(X)) <= {"cat", "dog"}


def test_regression_elasticnet_matches_solver_and_sklearn_shapes():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((80, 10))
    y = X[:, 0] * 3 - X[:, 1] + 0.1 * rng.standard_normal(80) + 5
    reg = SparseLinearRegression(strength=0.1, penalty="elasticnet", l1_ratio=0.3, tol=1e-9).fit(X, y)
    res = solve_linear(X, y, loss="squared", penalty=ElasticNet(0.1, 0.3), tol=1e-9)
    assert reg.coef_.shape == (10,) and isinstance(reg.intercept_, float)
    np.testing.assert_allclose(reg.coef_, res.coef[0], atol=1e-9)
    assert reg.score(X, y) > 0.95
    multi = SparseLinearRegression(strength=0.1).fit(X, np.column_stack([y, -y]))
    assert multi.coef_.shape == (2, 10) and multi.predict(X).shape == (80, 2)


def test_fit_keeps_constructor_arguments_and_pickles(digits3):
    X, y = digits3
    clf = SparseLogisticRegression(strength=0.01, penalty="elasticnet", l1_ratio=0.7)
    params = clf.get_params()
    clf.fit(X, y)
    assert clf.get_params() == params
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))
    assert clone(clf).get_params() == params


def test_works_in_a_pipeline_with_cross_validation(digits3):
    X, y = digits3
    scores = cross_val_score(
        make_pipeline(StandardScaler(), SparseLogisticRegression(strength=0.01)), X, y, cv=3
    )
    assert scores.mean() > 0.85


def test_bad_penalty_names_the_parameter(digits3):
    X, y = digits3
    with pytest.raises(SparsetrainError, match="sparsity.penalty 'lasso' is unknown"):
        SparseLogisticRegression(penalty="lasso").fit(X, y)
    with pytest.raises(SparsetrainError, match="strength"):
        SparseLinearRegression(strength=-1.0).fit(X, np.arange(len(y)))


def test_not_converged_warns(digits3):
    X, y = digits3
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        SparseLogisticRegression(strength=1e-4, tol=1e-12, max_iter=1).fit(X, y)
