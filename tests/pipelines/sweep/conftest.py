"""Sweep fixtures: real digits splits, a real MLflow SQLite store and real Optuna storage in
tmp_path; and a scratch copy of the project for `kedro run` end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from sparsetrain.core.data import DatasetInfo, Splits

ROOT = Path(__file__).resolve().parents[3]
FAST = {"training.epochs": 2, "training.early_stopping": None}


@pytest.fixture
def splits(digits_splits) -> Splits:
    return Splits(*digits_splits)


@pytest.fixture(scope="session")
def digits():
    from sparsetrain.core.data import load_digits_dataset

    return load_digits_dataset()


@pytest.fixture
def dataset_info(digits) -> DatasetInfo:
    return DatasetInfo.of(digits)


@pytest.fixture
def standardizer(digits):
    """The standardizer of the ``splits`` fixture (digits_data.standardized_digits, seed 0)."""
    from sparsetrain.core.data import Standardizer, split_dataset

    return Standardizer().fit(split_dataset(digits, val_size=0.1, test_size=0.2, seed=0).X_train)


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
    """A fresh MLflow store with an active parent run, as kedro-mlflow leaves it for the node;
    the working folder is tmp_path (run folders are data/08_reporting/runs/<run id>/ under it)."""
    uri = fresh_store(empty_store, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
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
