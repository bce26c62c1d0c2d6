"""scikit-learn compatible estimators over ``sparsetrain.core.solvers.solve_linear``.

The strength follows the solvers' conventions (the mean loss plus ``strength * R(coef)``): for L1
logistic regression it is scikit-learn's ``C = 1 / (n_samples * strength)``, for the squared loss it
is ``Lasso(alpha=strength)`` / ``ElasticNet(alpha=strength, l1_ratio=...)``. Penalties come from
``sparsetrain.core.penalties.make_penalty`` (``penalty`` names it, ``l1_ratio`` is used by
``elasticnet``). ``fit`` never changes the constructor arguments; what it learns ends in ``_``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from sparsetrain.core.penalties import make_penalty
from sparsetrain.core.solvers import SolverResult, solve_linear

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - scikit-learn 1.5

    def _validate_data(estimator, X="no_validation", y="no_validation", **kwargs):
        return estimator._validate_data(X, y, **kwargs)


__all__ = ["SparseLinearRegression", "SparseLogisticRegression"]


class _SparseLinear(BaseEstimator):
    """Shared parameters and the call into the solver."""

    def __init__(
        self,
        strength: float = 1e-3,
        penalty: str = "l1",
        l1_ratio: float = 0.5,
        fit_intercept: bool = True,
        tol: float = 1e-6,
        max_iter: int = 5000,
    ):
        self.strength = strength
        self.penalty = penalty
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def _solve(self, X: np.ndarray, y: np.ndarray, loss: str) -> SolverResult:
        penalty = make_penalty(self.penalty, self.strength, l1_ratio=self.l1_ratio)
        result = solve_linear(
            X,
            y,
            loss=loss,
            penalty=penalty,
            fit_intercept=self.fit_intercept,
            tol=self.tol,
            max_iter=self.max_iter,
        )
        if not result.converged:
            warnings.warn(
                f"{type(self).__name__} stopped after max_iter={self.max_iter} steps with optimality "
                f"violation {result.kkt:.2g} > tol={self.tol:g}; raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=3,
            )
        self.n_iter_ = result.n_iter
        return result

    def _decision(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X @ np.atleast_2d(self.coef_).T + self.intercept_


class SparseLogisticRegression(ClassifierMixin, _SparseLinear):
    """Penalized logistic regression: binary (two classes) or true multinomial (more), not
    one-vs-rest. ``coef_`` is ``(1, n_features)`` for two classes, ``(n_classes, n_features)``
    otherwise, as in scikit-learn."""

    def fit(self, X, y):
        X, y = _validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        loss = "logistic" if len(self.classes_) == 2 else "multinomial"
        result = self._solve(X, codes.reshape(-1), loss)
        self.coef_, self.intercept_ = result.coef, result.intercept
        return self

    def decision_function(self, X) -> np.ndarray:
        scores = self._decision(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = 1.0 / (1.0 + np.exp(-scores))
            return np.column_stack([1.0 - p, p])
        scores = scores - scores.max(1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(1)
        return self.classes_[index]


class SparseLinearRegression(RegressorMixin, _SparseLinear):
    """Penalized least squares, ``1/(2n) |y - Xw - b|^2 + penalty``: scikit-learn's Lasso /
    ElasticNet objective. A 1-D ``y`` gives ``coef_`` ``(n_features,)`` and a float
    ``intercept_``; a 2-D ``y`` one row of ``coef_`` per output."""

    def fit(self, X, y):
        X, y = _validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True)
        result = self._solve(X, y, "squared")
        if np.ndim(y) == 1:
            self.coef_, self.intercept_ = result.coef[0], float(result.intercept[0])
        else:
            self.coef_, self.intercept_ = result.coef, result.intercept
        return self

    def predict(self, X) -> np.ndarray:
        scores = self._decision(X)
        return scores[:, 0] if np.ndim(self.coef_) == 1 else scores

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}
