"""Sweep fixtures: real digits splits, a real MLflow SQLite store and real Optuna storage in
tmp_path; and a scratch copy of the project for `kedro run` end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from sparsetrain.core.data import Splits

ROOT = Path(__file__).resolve().parents[3]
FAST = {"training.epochs": 2, "training.early_stopping": None}


@pytest.fixture
def splits(digits_splits) -> Splits:
    return Splits(*digits_splits)


@pytest.fixture
def dataset_info() -> dict:
    return {
        "task": "classification",
        "n_rows": 1797,
        "n_features": 64,
        "n_classes": 10,
        "image_shape": [8, 8],
        "feature_names": [f"pixel_{i}" for i in range(64)],
        "class_names": None,
        "informative": None,
    }


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made once (MLflow's migrations take seconds)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def fresh_store(empty_store: Path, folder: Path) -> str:
    shutil.copy(empty_store, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def tracking(tmp_path, monkeypatch, empty_store):
    """A fresh MLflow store with an active parent run, as kedro-mlflow leaves it for the node."""
    uri = fresh_store(empty_store, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment("sweep-test")
    with mlflow.start_run(run_name="sweep") as parent:
        yield parent
    mlflow.set_tracking_uri(None)
    del experiment


@pytest.fixture
def project(tmp_path, monkeypatch, empty_store):
    """A scratch project: conf + pyproject + data/, its own MLflow store; the package is installed."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # Kedro checks that the source folder exists
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "data").mkdir()
    uri = fresh_store(empty_store, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    # One torch thread per worker: several workers share two cores.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield tmp_path
    mlflow.set_tracking_uri(None)
