"""Standardized digits split the way the ingestion pipeline splits it: the tests' small real data."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def standardized_digits(seed: int = 42) -> tuple[np.ndarray, ...]:
    """``(X_train, y_train, X_val, y_val, X_test, y_test)``: stratified 70 / 10 / 20, float32,
    standardized with statistics of the training rows only."""
    from sparsetrain.core.data import Standardizer, load_digits_dataset, split_dataset

    raw = split_dataset(load_digits_dataset(), val_size=0.1, test_size=0.2, seed=seed)
    scaler = Standardizer().fit(raw.X_train)
    return (
        scaler.transform(raw.X_train), raw.y_train,
        scaler.transform(raw.X_val), raw.y_val,
        scaler.transform(raw.X_test), raw.y_test,
    )
