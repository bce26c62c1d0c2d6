"""One object that maps RAW feature rows to predictions: standardizer + reducer + network.

This is what the registry serves, so that a user never has to repeat the preprocessing. The served
copy is stored without pickle (:func:`save_served` / :func:`load_served`): the network as the
sparse safetensors export, the standardizer and the reducer (every reducer of
``core.compression`` is an affine map) as plain tensors, and what remains (task, column and class
names, the inference policy) as JSON.

Inference, sparse where it is faster (:class:`SparseInference`): the served network keeps both its
dense layers and the feature-major CSR chain of ``core.export.to_sparse_inference``, and picks one
per request. ``auto`` takes the chain when

- the ``Linear`` weights are at most ``AUTO_MAX_DENSITY`` (20%) nonzero overall, a layer above
  ``LAYER_CSR_MAX_DENSITY`` (30%, which the chain runs with dense kernels) counted as all nonzero:
  layers pruned to different densities (global magnitude pruning: 24%, 1% and 14% on digits)
  count by their nonzeros,
- they hold at least ``MIN_CHAIN_WEIGHTS`` (16,384) weights: below that the fixed cost of the
  sparse kernels and of the two transposes exceeds the whole dense product, and
- the request's dense multiply-adds, ``rows x weights``, reach ``BREAK_EVEN_MADDS * (density /
  10%)^2``: 2**19 at 10% density (2 rows of a 784-300-100-10 MLP, 11 of a 64-300-100-10), four
  times that at 20%, a quarter at 5%.

Measured with torch 2.13 on one CPU thread (AMD EPYC, 2 cores): at 10% density the chain of the
784-300-100-10 MLP is 0.94x dense at 1 row, 1.35x at 2, 2.0x at 8, 2.5x at 64; the
64-300-100-10 one 1.02x at 4 rows, 1.25x at 16, 1.95x at 64; at 20% the 784-300-100-10 one
0.96x at 2 rows and 1.5x from 8; networks under 16k weights (784-10, 64-32-10) lose at every
batch size (0.6-0.9x). ``dense`` and ``sparse`` force one module for every request.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from sparsetrain.core.compression import transform as reduce
from sparsetrain.core.data import Standardizer

SERVED_FORMAT = "sparsetrain-served-v1"
POLICIES = ("auto", "dense", "sparse")
OUTPUTS = ("labels", "probabilities")
AUTO_MAX_DENSITY = 0.2
LAYER_CSR_MAX_DENSITY = 0.3  # to_sparse_inference's default: a CSR layer this dense is ~1x dense
MIN_CHAIN_WEIGHTS = 2**14
BREAK_EVEN_MADDS = 2**19  # rows x Linear weights at 10% density
FLOAT32_MAX = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------------------------
# request rows


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def _frame_values(X: pd.DataFrame, feature_names: tuple[str, ...], by_name: bool) -> np.ndarray:
    """The feature columns of a frame, by name (tables) or by position (arrays); non-numbers named."""
    X = X.rename(columns=str)
    if by_name:
        missing = [c for c in feature_names if c not in X.columns]
        if missing:
            raise ValueError(
                f"input lacks feature column(s) {_names(missing)}; send the {len(feature_names)} "
                f"training columns ({_names(list(feature_names), 3)})"
            )
        X = X.loc[:, list(feature_names)]
    elif X.shape[1] != len(feature_names):
        raise ValueError(f"expected rows of {len(feature_names)} features, got {X.shape[1]} column(s)")
    for position, column in enumerate(X.columns):
        values = X.iloc[:, position]
        if not pd.api.types.is_numeric_dtype(values):
            bad = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
            if len(bad):
                raise ValueError(
                    f"feature column {column!r} holds a non-numeric value {bad.iloc[0]!r} (row {bad.index[0]}); "
                    "send numbers"
                )
    return X.to_numpy(dtype=np.float64)


def _matrix_values(X: Any, n_features: int) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"expected a matrix of rows of {n_features} features, got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(f"expected rows of {n_features} features, got {X.shape[1]} column(s)")
    if X.dtype.kind not in "iuf":
        for (row, col), value in np.ndenumerate(X):
            try:
                float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"column {col} holds a non-numeric value {value!r} (row {row}); send numbers"
                ) from None
    return X.astype(np.float64)


def check_rows(X: Any, feature_names: tuple[str, ...], by_name: bool = True) -> np.ndarray:
    """Raw rows (a frame, or a matrix in training column order) as float64, or a ``ValueError``
    whose one line names the column and the fix: a served model must refuse a bad request rather
    than predict from NaN (the network would answer class 0 for it)."""
    if hasattr(X, "columns"):
        values = _frame_values(X, feature_names, by_name)
    else:
        values = _matrix_values(X, len(feature_names))
    if values.shape[0] == 0:
        raise ValueError("the request holds no rows")
    bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        value = values[row, col]
        what = "NaN (a missing value)" if np.isnan(value) else "infinite" if np.isinf(value) else (
            f"{value:g}, too large for float32"
        )
        raise ValueError(
            f"feature {feature_names[col]!r} (column {col}) is {what} in {int(bad[:, col].sum())} row(s), "
            f"first row {row}; send finite numbers"
        )
    return values


# --------------------------------------------------------------------------------------------
# preprocessing as tensors


@dataclass
class AffineReducer:
    """``x @ weight.T + bias``: what PCA (whitened or not), truncated SVD and the random projections
    compute, held as plain arrays so that the served model needs no pickled scikit-learn object."""

    weight: np.ndarray  # (n_components, n_features)
    bias: np.ndarray  # (n_components,)

    def transform(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(X, dtype=np.float64) @ self.weight.astype(np.float64).T
        return out + self.bias.astype(np.float64)

    @classmethod
    def of(cls, reducer: Any) -> AffineReducer | None:
        """The affine map of a fitted reducer of ``core.compression``; None for the identity."""
        from scipy import sparse
        from sklearn.decomposition import PCA, TruncatedSVD
        from sklearn.preprocessing import FunctionTransformer
        from sklearn.random_projection import BaseRandomProjection

        if reducer is None or (isinstance(reducer, FunctionTransformer) and reducer.func is None):
            return None
        if not isinstance(reducer, (PCA, TruncatedSVD, BaseRandomProjection)):
            raise TypeError(f"cannot store a {type(reducer).__name__} reducer as an affine map")
        components = reducer.components_
        weight = np.asarray(components.toarray() if sparse.issparse(components) else components, dtype=np.float64)
        bias = np.zeros(weight.shape[0])
        if isinstance(reducer, PCA):
            bias = -(np.asarray(reducer.mean_, dtype=np.float64) @ weight.T)
            if reducer.whiten:  # scikit-learn clips the scale at eps of the variance's dtype too
                eps = np.finfo(reducer.explained_variance_.dtype).eps
                scale = np.maximum(np.sqrt(np.asarray(reducer.explained_variance_, dtype=np.float64)), eps)
                weight, bias = weight / scale[:, None], bias / scale
        return cls(weight=weight, bias=bias)


def preprocessing_tensors(standardizer: Standardizer, reducer: Any) -> dict[str, np.ndarray]:
    """The standardizer's mean / scale and the reducer's affine map, as safetensors tensors."""
    tensors = {
        "standardizer.mean": np.ascontiguousarray(standardizer.mean_),
        "standardizer.scale": np.ascontiguousarray(standardizer.scale_),
    }
    affine = reducer if isinstance(reducer, AffineReducer) else AffineReducer.of(reducer)
    if affine is not None:
        tensors["reducer.weight"] = np.ascontiguousarray(affine.weight)
        tensors["reducer.bias"] = np.ascontiguousarray(affine.bias)
    return tensors


def preprocessing_from_tensors(tensors: dict[str, np.ndarray]) -> tuple[Standardizer, AffineReducer | None]:
    """The inverse of :func:`preprocessing_tensors`: a fitted standardizer and the reducer (None: none)."""
    standardizer = Standardizer()
    standardizer.mean_ = tensors["standardizer.mean"]
    standardizer.scale_ = tensors["standardizer.scale"]
    if "reducer.weight" not in tensors:
        return standardizer, None
    return standardizer, AffineReducer(tensors["reducer.weight"], tensors["reducer.bias"])


# --------------------------------------------------------------------------------------------
# dense or sparse kernels


def linear_weights(network: nn.Module) -> tuple[int, float]:
    """``(weights, density)`` of the ``Linear`` layers, a layer denser than ``LAYER_CSR_MAX_DENSITY``
    counted as all nonzero: the chain runs it with dense kernels."""
    total = cost = 0
    for layer in network.modules():
        if isinstance(layer, nn.Linear):
            n, nnz = layer.weight.numel(), int(torch.count_nonzero(layer.weight))
            total += n
            cost += nnz if nnz <= LAYER_CSR_MAX_DENSITY * n else n
    return total, cost / max(total, 1)


@dataclass
class SparseInference:
    """The network twice, dense and as the feature-major CSR chain, and the rule that picks one per
    request (module docstring)."""

    dense: nn.Module
    chain: nn.Module
    policy: str = "auto"
    weights: int = 0
    density: float = 1.0

    @classmethod
    def of(cls, network: nn.Module, policy: str = "auto") -> SparseInference:
        from sparsetrain.core.export import to_sparse_inference

        if policy not in POLICIES:
            raise ValueError(f"inference policy {policy!r} is unknown; choose one of {', '.join(POLICIES)}")
        dense = network.to("cpu").eval()
        weights, density = linear_weights(dense)
        chain = to_sparse_inference(dense, max_density=LAYER_CSR_MAX_DENSITY) if policy != "dense" else dense
        return cls(dense=dense, chain=chain, policy=policy, weights=weights, density=density)

    def uses_chain(self, rows: int) -> bool:
        if self.policy != "auto":
            return self.policy == "sparse"
        if self.density > AUTO_MAX_DENSITY or self.weights < MIN_CHAIN_WEIGHTS:
            return False
        return rows * self.weights >= BREAK_EVEN_MADDS * (self.density / 0.1) ** 2

    def module(self, rows: int) -> nn.Module:
        return self.chain if self.uses_chain(rows) else self.dense

    def describe(self) -> dict[str, Any]:
        """What the rule saw, for the served model's JSON (read by people, not by the loader)."""
        smallest = None
        if self.density <= AUTO_MAX_DENSITY and self.weights >= MIN_CHAIN_WEIGHTS:
            smallest = max(1, math.ceil(BREAK_EVEN_MADDS * (self.density / 0.1) ** 2 / self.weights))
        return {
            "policy": self.policy, "linear_weights": self.weights, "linear_density": round(self.density, 6),
            "auto_max_density": AUTO_MAX_DENSITY, "layer_csr_max_density": LAYER_CSR_MAX_DENSITY,
            "min_chain_weights": MIN_CHAIN_WEIGHTS,
            "break_even_madds_at_10pct": BREAK_EVEN_MADDS,
            "auto_chain_from_rows": smallest if self.policy == "auto" else None,
        }


# --------------------------------------------------------------------------------------------
# the predictor


@dataclass
class RawFeaturePredictor:
    standardizer: Standardizer
    reducer: Any  # fitted scikit-learn transformer, AffineReducer, or None
    network: nn.Module
    task: str
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...] | None = None
    by_name: bool = True  # frames: columns by name (tables) or by position (array sources)
    inference: SparseInference | None = field(default=None, repr=False)  # None: the network as is

    def features(self, X: Any) -> np.ndarray:
        """Raw rows (array or DataFrame with the training columns) -> network inputs."""
        X = self.standardizer.transform(check_rows(X, self.feature_names, self.by_name))
        return X if self.reducer is None else reduce(self.reducer, X)

    def raw_output(self, X: Any) -> np.ndarray:
        features = torch.from_numpy(self.features(X))
        network = self.network if self.inference is None else self.inference.module(features.shape[0])
        network.eval()
        with torch.inference_mode():
            out = network(features)
        return out.numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task != "classification":
            raise ValueError("class probabilities need a classifier; this model is a regression")
        return torch.softmax(torch.from_numpy(self.raw_output(X)), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (original names when the labels were strings) or regression values."""
        out = self.raw_output(X)
        if self.task == "regression":
            return out.squeeze(-1)
        ids = out.argmax(axis=1)
        return np.asarray(self.class_names, dtype=object)[ids] if self.class_names else ids

    def serve(self, X: Any, output: str = "labels") -> Any:
        """What the served model answers: labels (or values), or one probability column per class."""
        if output not in OUTPUTS:
            raise ValueError(f"output {output!r} is unknown; choose one of {', '.join(OUTPUTS)}")
        if output == "labels":
            return self.predict(X)
        proba = self.predict_proba(X)
        names = self.class_names or tuple(str(i) for i in range(proba.shape[1]))
        return pd.DataFrame(proba, columns=list(names))


# --------------------------------------------------------------------------------------------
# stored without pickle


def served_spec(predictor: RawFeaturePredictor, policy: str = "auto") -> dict[str, Any]:
    """The JSON half of the served model: everything but tensors."""
    inference = SparseInference.of(predictor.network, policy)
    return {
        "format": SERVED_FORMAT,
        "task": predictor.task,
        "feature_names": list(predictor.feature_names),
        "class_names": list(predictor.class_names) if predictor.class_names else None,
        "by_name": predictor.by_name,
        "outputs": list(OUTPUTS),
        "inference": inference.describe(),
    }


def save_served(predictor: RawFeaturePredictor, folder: str | Path, policy: str = "auto") -> dict[str, Path]:
    """Write the preprocessing tensors and the JSON spec to ``folder``; the network is the sparse
    export, written by ``core.export.save_sparse``. Returns the files by role."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"preprocessing": folder / "preprocessing.safetensors", "spec": folder / "served.json"}
    save_file(preprocessing_tensors(predictor.standardizer, predictor.reducer), str(files["preprocessing"]))
    files["spec"].write_text(json.dumps(served_spec(predictor, policy), indent=1, sort_keys=True))
    return files


def load_served(weights: str | Path, preprocessing: str | Path, spec: str | Path) -> RawFeaturePredictor:
    """The served predictor from its three files (sparse export, preprocessing, JSON spec)."""
    from sparsetrain.core.export import load_sparse

    meta = json.loads(Path(spec).read_text())
    if meta.get("format") != SERVED_FORMAT:
        raise ValueError(f"{spec}: not a {SERVED_FORMAT} file (format {meta.get('format')!r})")
    standardizer, reducer = preprocessing_from_tensors(load_file(str(preprocessing)))
    network = load_sparse(weights)
    class_names = meta["class_names"]
    return RawFeaturePredictor(
        standardizer=standardizer,
        reducer=reducer,
        network=network,
        task=meta["task"],
        feature_names=tuple(meta["feature_names"]),
        class_names=tuple(class_names) if class_names else None,
        by_name=meta["by_name"],
        inference=SparseInference.of(network, meta["inference"]["policy"]),
    )
