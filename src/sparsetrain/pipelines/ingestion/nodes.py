"""Ingestion: load the configured source, validate it, split it, standardize it on train only."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from sparsetrain.config import DataConfig
from sparsetrain.core.data import Dataset, DatasetInfo, Splits, Standardizer, load_source_data, split_dataset


def load_source(
    data: DataConfig, raw_table: pd.DataFrame | None, raw_batches: dict[str, Callable[[], pd.DataFrame]]
) -> Dataset:
    """Load and validate ``data.source`` (:func:`~sparsetrain.core.data.load_source_data`): for
    ``table`` the catalog's ``raw_table`` or the ``data.path`` file, for ``batches`` every batch file."""
    return load_source_data(data, raw_table, raw_batches)[0]


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
