"""Ingestion: load the configured source, validate it, split it, standardize it on train only."""

from __future__ import annotations

import pandas as pd

from sparsetrain.config import DataConfig
from sparsetrain.core.data import (
    Dataset,
    DatasetInfo,
    Splits,
    Standardizer,
    load_dataset,
    split_dataset,
    validate_dataset,
)
from sparsetrain.errors import SparsetrainError


def load_source(data: DataConfig, raw_table: pd.DataFrame | None) -> Dataset:
    """Load ``data.source``; for ``table`` the ``data.path`` file, else the catalog's ``raw_table``."""
    from_catalog = data.source == "table" and data.path is None
    if from_catalog and data.separator is not None:
        raise SparsetrainError(
            "data.separator applies to data.path; set data.path to the file, or give raw_table "
            "in conf/base/catalog.yml its own `separator:`"
        )
    table = raw_table if from_catalog else None
    dataset = load_dataset(data, table)
    validate_dataset(dataset)
    return dataset


def describe_dataset(dataset: Dataset) -> DatasetInfo:
    return DatasetInfo.of(dataset)


def split_data(dataset: Dataset, data: DataConfig) -> Splits:
    return split_dataset(dataset, data.val_size, data.test_size, data.seed)


def fit_standardizer(raw_splits: Splits) -> Standardizer:
    return Standardizer().fit(raw_splits.X_train)


def standardize(raw_splits: Splits, standardizer: Standardizer) -> Splits:
    return Splits(
        standardizer.transform(raw_splits.X_train), raw_splits.y_train,
        standardizer.transform(raw_splits.X_val), raw_splits.y_val,
        standardizer.transform(raw_splits.X_test), raw_splits.y_test,
    )
