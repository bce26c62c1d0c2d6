"""Compression: fit the reducer on the training split only, then project every split."""

from __future__ import annotations

from typing import Any

from sparsetrain.config import parse_section
from sparsetrain.core.compression import fit_reducer, transform
from sparsetrain.core.data import Splits


def fit_compression(splits: Splits, compression: dict[str, Any], data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    cfg = parse_section("compression", compression)
    seed = parse_section("data", data).seed
    return fit_reducer(cfg.method, cfg.n_components, splits.X_train, seed)


def compress(splits: Splits, reducer: Any) -> Splits:
    return Splits(
        transform(reducer, splits.X_train), splits.y_train,
        transform(reducer, splits.X_val), splits.y_val,
        transform(reducer, splits.X_test), splits.y_test,
    )


def compression_metrics(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Kept components and, where defined, the explained variance ratio, as MLflow metrics."""
    metrics = {"compression_n_components": {"value": float(summary["n_components"]), "step": 0}}
    if "explained_variance_ratio" in summary:
        metrics["explained_variance_ratio"] = {"value": summary["explained_variance_ratio"], "step": 0}
    return metrics
