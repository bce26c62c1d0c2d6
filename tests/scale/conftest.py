"""Scale-out fixtures: one throwaway PostgreSQL cluster for the whole session (tests/services.py),
and for each test its own two databases (the Optuna study's, the MLflow server's), its own MLflow
server on them and a scratch copy of the project whose workers track to that server.

Skipped, with the reason, where PostgreSQL's server binaries are not installed. Every process
started here is stopped and every folder removed in the teardown, whether the test passed or not.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import mlflow
import pytest
from kedro_project import make_project
from services import MlflowServer, Postgres, pg_bin

_databases = itertools.count()


@dataclass
class Stores:
    """One test's shared stores: the Optuna storage URL and the MLflow server."""

    optuna_url: str
    server: MlflowServer


@pytest.fixture(scope="session")
def postgres():
    if pg_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb) not installed: apt-get install postgresql")
    cluster = Postgres()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def stores(postgres, tmp_path, monkeypatch):
    """Fresh databases and an MLflow server on them; MLFLOW_TRACKING_URI points at the server
    (for this process and the workers it starts)."""
    n = next(_databases)
    optuna_url = postgres.create_database(f"optuna_{n}")
    backend = postgres.create_database(f"mlflow_{n}")
    server = MlflowServer(backend, tmp_path / "mlartifacts", tmp_path / "mlflow-server.log")
    try:
        server.start()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        mlflow.set_tracking_uri(server.uri)
        yield Stores(optuna_url, server)
    finally:
        server.stop()


@pytest.fixture
def scale_project(tmp_path, monkeypatch, stores):
    """A scratch project (tests/kedro_project.py) whose runs track to the test's MLflow server."""
    project = make_project(tmp_path / "project", monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stores.server.uri)
    mlflow.set_tracking_uri(stores.server.uri)
    return project
