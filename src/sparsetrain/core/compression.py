"""Input compression before training: PCA, truncated SVD and random projections.

A reducer is an ordinary scikit-learn transformer fitted on the training split only; the served
model stores it as the affine map it is (:class:`sparsetrain.core.predictor.AffineReducer`). Bad
``compression.*`` settings raise :class:`SparsetrainError` before anything is fitted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.preprocessing import FunctionTransformer
from sklearn.random_projection import GaussianRandomProjection, SparseRandomProjection

from sparsetrain.errors import SparsetrainError

METHODS = ("none", "pca", "svd", "random_projection", "sparse_random_projection")


def _is_fraction(n_components: int | float | None) -> bool:
    return isinstance(n_components, float) and not n_components.is_integer()


def make_reducer(method: str | None, n_components: int | float | None, n_features: int, seed: int = 0) -> Any:
    """An unfitted transformer for ``compression.method``; identity for ``none``."""
    method = method or "none"
    if method not in METHODS:
        raise SparsetrainError(
            f"compression.method '{method}' is unknown; choose one of {', '.join(METHODS)}"
        )
    if method == "none":
        return FunctionTransformer()
    if n_components is None:
        raise SparsetrainError(f"compression.n_components is required for method '{method}'; set it")
    if _is_fraction(n_components):
        if method != "pca":
            raise SparsetrainError(
                f"compression.n_components={n_components} is a fraction of variance, which only method "
                f"'pca' understands; give '{method}' a whole number of components"
            )
        if not 0 < n_components < 1:
            raise SparsetrainError(
                f"compression.n_components={n_components}: a fraction of variance must be in (0, 1)"
            )
        return PCA(n_components=n_components, svd_solver="full", random_state=seed)
    k = int(n_components)
    limit = n_features - 1 if method == "svd" else n_features
    if not 1 <= k <= limit:
        rule = " (truncated SVD keeps fewer than all)" if method == "svd" else ""
        raise SparsetrainError(
            f"compression.n_components={k} does not fit the {n_features} features{rule}; "
            f"choose at most {limit}"
        )
    if method == "pca":
        return PCA(n_components=k, random_state=seed)
    if method == "svd":
        return TruncatedSVD(n_components=k, random_state=seed)
    if method == "random_projection":
        return GaussianRandomProjection(n_components=k, random_state=seed)
    return SparseRandomProjection(n_components=k, dense_output=True, random_state=seed)


def fit_reducer(
    method: str | None, n_components: int | float | None, X_train: np.ndarray, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """Fit on the training rows only; return the reducer and a summary to log."""
    n_rows, n_features = X_train.shape
    reducer = make_reducer(method, n_components, n_features, seed)
    if isinstance(reducer, PCA) and isinstance(reducer.n_components, int) and reducer.n_components > n_rows:
        raise SparsetrainError(
            f"compression.n_components={reducer.n_components} is more than the {n_rows} training rows "
            f"PCA can use; choose at most {n_rows}"
        )
    reducer.fit(X_train)
    summary: dict[str, Any] = {
        "method": method or "none",
        "n_components": n_features,
        "n_features_in": n_features,
    }
    if isinstance(reducer, PCA):
        summary["n_components"] = int(reducer.n_components_)
    elif not isinstance(reducer, FunctionTransformer):
        summary["n_components"] = int(reducer.n_components)
    if isinstance(reducer, (PCA, TruncatedSVD)):
        ratios = [float(r) for r in reducer.explained_variance_ratio_]
        summary["explained_variance_ratio"] = float(sum(ratios))
        summary["explained_variance_ratio_per_component"] = ratios
    return reducer, summary


def transform(reducer: Any, X: np.ndarray) -> np.ndarray:
    """Apply a fitted reducer; float32 out, whatever dtype sklearn computed in."""
    return np.asarray(reducer.transform(X), dtype=np.float32)
