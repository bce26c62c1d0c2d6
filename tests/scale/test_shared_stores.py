"""Sweep workers on shared stores (issue 15): many `kedro run --pipelines sweep` processes on one
study in a real PostgreSQL Optuna storage, tracking to a real MLflow server (PostgreSQL backend,
proxied artifacts). No mocks: the workers are processes, as users start them; a killed worker is
SIGKILLed; a lost server is a terminated one, restarted on its port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from services import tail

from sparsetrain.config import parse_sweep_section
from sparsetrain.pipelines.sweep import report
from sparsetrain.pipelines.sweep import study as studies

pytestmark = pytest.mark.slow

FAST = "training.epochs=2,training.early_stopping=null"


def params(stores, study: str, extra: str = FAST, **sweep) -> str:
    keys = {"storage": stores.optuna_url, "study_name": study, **sweep}
    return ",".join([*(f"sweep.{k}={v}" for k, v in keys.items()), extra])


class Worker:
    """One `kedro run --pipelines sweep` process, its output (stdout and stderr) in a log file."""

    def __init__(self, project: Path, params: str, name: str, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, project / f"{name}.log"
        cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", "sweep", "--params", params]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=project, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 25) -> str:
        return f"--- {self.name} (pid {self.pid}, rc {self.proc.returncode}) ---\n{tail(self.log, lines)}"

    def wait_for(self, marker: str, timeout: float = 240.0) -> None:
        """Until ``marker`` is in the output; fails if the worker ends or the time is out."""
        deadline = time.monotonic() + timeout
        while marker not in self.output():
            assert self.proc.poll() is None and time.monotonic() < deadline, f"no '{marker}':\n{self.tail()}"
            time.sleep(0.2)


def finish(workers: list[Worker], timeout: float = 400.0) -> None:
    """Wait for every worker; any that fails fails the test with the tails of all their logs."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    logs = "\n".join(w.tail() for w in workers)
    assert all(w.proc.returncode == 0 for w in workers), f"a worker failed or hung:\n{logs}"


@pytest.fixture
def workers():
    """The workers a test starts; any still running at its end is killed (no leaks on failure)."""
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait()


def worker_pid(trial: optuna.trial.FrozenTrial) -> int:
    return int(trial.user_attrs["worker"].rsplit(":", 1)[1])


def sweep_runs(client: MlflowClient, study: str, role: str) -> list:
    experiment = client.get_experiment_by_name("sparsetrain")
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.sweep_study = '{study}' and tags.sweep_role = '{role}'",
        max_results=1000,
    )


def best_number(project: Path, study: optuna.Study) -> int:
    """The study's best trial, chosen as the sweep chooses it (report.choose, the project's sweep)."""
    sweep = yaml.safe_load((project / "conf/base/parameters_sweep.yml").read_text())["sweep"]
    best, _ = report.choose(studies.trial_records(study), parse_sweep_section(sweep))
    return best["number"]


def test_four_workers_share_one_study_and_register_its_best_once(scale_project, stores, workers):
    workers += [Worker(scale_project, params(stores, "four", n_trials=2), f"w{i}") for i in range(4)]
    finish(workers)
    logs = "\n".join(w.tail() for w in workers)

    study = optuna.load_study(study_name="four", storage=stores.optuna_url)
    assert sorted(t.number for t in study.trials) == list(range(8)), f"duplicate or lost trial numbers\n{logs}"
    assert {t.state.name for t in study.trials} == {"COMPLETE"}, logs
    assert sorted(worker_pid(t) for t in study.trials) == sorted(2 * [w.pid for w in workers])

    client = MlflowClient()
    parents = {run.info.run_id: run for run in sweep_runs(client, "four", "parent")}
    assert len(parents) == 4 and {r.info.status for r in parents.values()} == {"FINISHED"}, parents
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        parent = parents[run.data.tags["mlflow.parentRunId"]]
        assert run.info.status == "FINISHED" and run.data.tags["sweep_trial"] == str(trial.number)
        assert parent.info.run_id == trial.user_attrs["mlflow_parent_run_id"], f"trial {trial.number}"
        assert parent.data.tags["sparsetrain.pid"] == str(worker_pid(trial)), "nested under its own worker"
        assert run.data.metrics["val_accuracy"] == pytest.approx(trial.value)
    assert len(sweep_runs(client, "four", "trial")) == 8, "one nested run per trial"

    versions = [
        v for v in client.search_model_versions("", max_results=1000) if v.tags.get("sweep_study") == "four"
    ]
    registered = [v.tags["sweep_trial"] for v in versions]
    assert len(registered) == len(set(registered)) >= 1, f"a trial registered twice: {registered}"
    identity = {"sweep_study": "four", "sweep_storage": studies.safe_url(stores.optuna_url)}
    best = [v for v in versions if v.tags["sweep_trial"] == str(best_number(scale_project, study))]
    assert len(best) == 1, f"the study's best is registered {len(best)} times: {registered}"
    assert all(best[0].tags[k] == v for k, v in identity.items()), best[0].tags
    assert client.get_run(best[0].run_id).info.run_id in parents, "registered by one of the workers"
