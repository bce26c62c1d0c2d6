"""Ingestion: load the configured source, validate it, split it, standardize it on train only."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sparsetrain.config import parse_section
from sparsetrain.core.data import Dataset, Splits, Standardizer, load_dataset, split_dataset, validate_dataset


def load_source(data: dict[str, Any], raw_table: pd.DataFrame | None) -> Dataset:
    """Load ``data.source``; for ``table`` the ``data.path`` file, else the catalog's ``raw_table``."""
    cfg = parse_section("data", data)
    table = raw_table if cfg.source == "table" and cfg.path is None else None
    dataset = load_dataset(cfg, table)
    validate_dataset(dataset)
    return dataset


def describe_dataset(dataset: Dataset) -> dict[str, Any]:
    """What later nodes need to know about the data, without the data itself."""
    return {
        "task": dataset.task,
        "n_rows": int(dataset.X.shape[0]),
        "n_features": int(dataset.X.shape[1]),
        "feature_names": list(dataset.feature_names),
        "image_shape": list(dataset.image_shape) if dataset.image_shape else None,
        "class_names": list(dataset.class_names) if dataset.class_names else None,
        "n_classes": int(len(set(dataset.y.tolist()))) if dataset.task == "classification" else None,
        "informative": list(dataset.informative) if dataset.informative is not None else None,
    }


def split_data(dataset: Dataset, data: dict[str, Any]) -> Splits:
    cfg = parse_section("data", data)
    return split_dataset(dataset, cfg.val_size, cfg.test_size, cfg.seed)


def fit_standardizer(raw_splits: Splits) -> Standardizer:
    return Standardizer().fit(raw_splits.X_train)


def standardize(raw_splits: Splits, standardizer: Standardizer) -> Splits:
    return Splits(
        standardizer.transform(raw_splits.X_train), raw_splits.y_train,
        standardizer.transform(raw_splits.X_val), raw_splits.y_val,
        standardizer.transform(raw_splits.X_test), raw_splits.y_test,
    )
