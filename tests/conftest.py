"""Shared fixtures: small real data (scikit-learn's digits), seeded."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def digits_splits():
    """Standardized digits, stratified 70 / 10 / 20 split, as the ingestion pipeline makes it."""
    from sparsetrain.core.data import Standardizer, load_digits_dataset, split_dataset

    raw = split_dataset(load_digits_dataset(), val_size=0.1, test_size=0.2, seed=0)
    scaler = Standardizer().fit(raw.X_train)
    return (
        scaler.transform(raw.X_train), raw.y_train,
        scaler.transform(raw.X_val), raw.y_val,
        scaler.transform(raw.X_test), raw.y_test,
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)
