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
    from digits_data import standardized_digits

    return standardized_digits(seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch project (conf + pyproject + src + empty data layers) with its own MLflow store."""
    from kedro_project import make_project

    return make_project(tmp_path, monkeypatch)
