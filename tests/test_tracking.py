"""MLflow conventions on a real SQLite store: run names, orphaned runs closed, registration order."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import mlflow
import pytest
from mlflow import MlflowClient

from sparsetrain import tracking
from sparsetrain.config import parse_config


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri), mlflow.create_experiment("t", artifact_location=str(tmp_path / "art"))
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize(
    "params, name",
    [
        ({}, "linear-l1-1e-03-kaiming_uniform"),
        ({"model": {"kind": "mlp"}, "sparsity": {"penalty": "none", "pruning": "gmp"}}, "mlp-gmp-10%-kaiming_uniform"),
        ({"sparsity": {"penalty": "l0", "pruning": "gmp", "target_density": 0.02}}, "linear-l0-1e-03-gmp-2%-kaiming_uniform"),
        ({"sparsity": {"penalty": "none"}, "model": {"init": "xavier_normal"}}, "linear-dense-xavier_normal"),
        ({"model": {"kind": "mlp"}, "sparsity": {"penalty": "none", "pruning": "rigl", "target_density": 0.02}},
         "mlp-rigl-2%-kaiming_uniform"),
        ({"model": {"kind": "mlp"}, "sparsity": {"penalty": "none", "pruning": "nm"}}, "mlp-nm2:4-kaiming_uniform"),
    ],
)
def test_run_names_say_what_ran(params, name):
    assert tracking.run_name(parse_config(params)) == name


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def running_run(client, experiment_id, tags):
    return client.create_run(experiment_id, tags=tags).info.run_id


def test_close_orphans_kills_runs_of_dead_processes_and_their_children(store):
    client, exp = store
    host = socket.gethostname()
    me = tracking.process_tags()
    dead = running_run(client, exp, {tracking.HOST_TAG: host, tracking.PID_TAG: str(dead_pid())})
    child = running_run(client, exp, {"mlflow.parentRunId": dead})
    alive = running_run(client, exp, me)
    reused = running_run(client, exp, {**me, tracking.PROCESS_START_TAG: "1"})  # our pid, another process
    elsewhere = running_run(client, exp, {tracking.HOST_TAG: "another-host", tracking.PID_TAG: str(dead_pid())})
    untagged = running_run(client, exp, {})

    closed = tracking.close_orphans(client, exp)

    assert set(closed) == {dead, child, reused}
    status = {run_id: client.get_run(run_id).info.status for run_id in (dead, child, alive, reused, elsewhere, untagged)}
    assert status == {dead: "KILLED", child: "KILLED", reused: "KILLED",
                      alive: "RUNNING", elsewhere: "RUNNING", untagged: "RUNNING"}


def test_process_tags_identify_this_process():
    tags = tracking.process_tags()
    assert tags[tracking.PID_TAG] == str(os.getpid())
    if os.path.exists("/proc/self/stat"):
        assert tags[tracking.PROCESS_START_TAG].isdigit()


def test_register_finishes_the_run_before_the_version_exists(store, tmp_path):
    client, exp = store

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[float], params=None) -> list[float]:
            return model_input

    with mlflow.start_run(experiment_id=exp) as run:
        uri = mlflow.pyfunc.log_model(name="model", python_model=Echo()).model_uri
        version = tracking.register(run.info.run_id, "m", uri, {"density": "0.1"})
        # still inside the run: the registry already sees it FINISHED
        assert client.get_run(run.info.run_id).info.status == "FINISHED"
    mv = client.get_model_version("m", version)
    assert mv.tags["density"] == "0.1"
    assert client.get_registered_model("m").aliases == {"champion": int(version), "challenger": int(version)}
    with mlflow.start_run(experiment_id=exp) as run:
        second = tracking.register(run.info.run_id, "m", uri, {})
    assert client.get_registered_model("m").aliases == {"champion": int(version), "challenger": int(second)}


def test_density_is_a_per_epoch_history_ending_with_the_final_models():
    from sparsetrain.core.training import History

    history = History(train_loss=[1.0, 0.5], val_loss=[1.1, 0.6], density=[0.1, 0.1])
    scalars, curves = tracking.training_curves({"density": 0.09, "test_accuracy": 0.9}, history)
    assert scalars == {"test_accuracy": 0.9}
    assert curves == {"train_loss": [1.0, 0.5], "val_loss": [1.1, 0.6], "density": [0.1, 0.1, 0.09]}
    assert tracking.training_curves({"density": 0.5}, History())[0] == {"density": 0.5}
