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


def study_versions(client: MlflowClient, study: str) -> list:
    """The model versions registered from ``study``'s trials."""
    found = client.search_model_versions("", max_results=1000)
    return [v for v in found if v.tags.get("sweep_study") == study]


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
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(8)), f"duplicate or lost trial numbers\n{logs}"
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


# ------------------------------------------------------------------------------- failures

# Trials of a few seconds on a small network: a worker is caught inside one by its open nested
# run; the killed one trains 10 epochs, so that it is caught well before its run closes.
# Heartbeats every 3 s: a killed worker's trial is stale after 6 s, long before the restarted
# worker is up, and a busy machine does not starve a live worker's heartbeat that long.
SMALL_MLP = "model.kind=mlp,model.hidden=[32],training.epochs=5,training.early_stopping=null"
KILLED_MLP = SMALL_MLP.replace("training.epochs=5", "training.epochs=10")
HEARTBEAT_S = 3


class StudyWatch:
    """The study's trials as the workers write them, read from the shared storage by this process.
    Opened once a worker has logged that the study is open: by then Optuna's tables exist, so this
    process never races the workers to create them."""

    def __init__(self, url: str, name: str) -> None:
        self.study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url))

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def inside_trial(self, worker: Worker) -> optuna.trial.FrozenTrial | None:
        """The worker's RUNNING trial while its nested MLflow run is open (training: the run is
        recorded, the metrics are not yet), or None."""
        for trial in self.trials():
            attrs = trial.user_attrs
            training = "mlflow_run_id" in attrs and "metrics" not in attrs
            if trial.state.name == "RUNNING" and training and worker_pid(trial) == worker.pid:
                return trial
        return None

    def wait_inside(self, workers: list[Worker], timeout: float = 240.0) -> list[optuna.trial.FrozenTrial]:
        """Until every one of ``workers`` is training a trial at the same moment; their trials."""
        deadline = time.monotonic() + timeout
        while True:
            inside = [self.inside_trial(w) for w in workers]
            if all(inside):
                return inside
            ended, late = any(w.proc.poll() is not None for w in workers), time.monotonic() > deadline
            if ended or late:
                logs = "\n".join(w.tail() for w in workers)
                why = "a worker ended" if ended else "timed out"
                pytest.fail(f"{why} before every worker was inside a trial:\n{logs}")
            time.sleep(0.1)


def assert_best_registered_once(client: MlflowClient, project: Path, study: optuna.Study) -> None:
    """No trial registered twice, and the study's final best once. (A worker that finishes
    early registers the best so far: the study's best may change after it, so a study can have
    more than one version, each of another trial.)"""
    registered = [v.tags["sweep_trial"] for v in study_versions(client, study.study_name)]
    assert len(registered) == len(set(registered)), f"a trial registered twice: {registered}"
    assert registered.count(str(best_number(project, study))) == 1, f"the study's best: {registered}"


def open_study_marker(worker: Worker) -> None:
    worker.wait_for("trials so far")  # run_sweep's first line: the study is open in the storage


def test_a_killed_worker_trial_fails_its_runs_close_and_a_restarted_worker_resumes(
    scale_project, stores, workers
):
    sweep = params(stores, "killed", KILLED_MLP, n_trials=3, heartbeat_s=HEARTBEAT_S)
    victim, survivor = Worker(scale_project, sweep, "victim"), Worker(scale_project, sweep, "survivor")
    workers += [victim, survivor]
    open_study_marker(victim)
    watch = StudyWatch(stores.optuna_url, "killed")
    (killed,) = watch.wait_inside([victim])
    # the Popen is `python -m kedro run` itself (no shell, no child process): the pid in the trial
    assert worker_pid(killed) == victim.pid
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait(timeout=30)
    assert victim.proc.returncode == -signal.SIGKILL
    done_before = sum(t.state.name == "COMPLETE" and worker_pid(t) == victim.pid for t in watch.trials())

    # the victim's command again, at once, next to the survivor: it resumes the study
    restarted = Worker(scale_project, sweep, "restarted")
    workers.append(restarted)
    finish([survivor, restarted])
    logs = "\n".join(w.tail() for w in workers)

    study = optuna.load_study(study_name="killed", storage=stores.optuna_url)
    by_number = {t.number: t for t in study.trials}
    assert sorted(by_number) == list(range(len(study.trials))), f"duplicate or lost trial numbers\n{logs}"
    assert by_number[killed.number].state.name == "FAIL", f"killed trial {by_number[killed.number].state}"
    others = [t for t in study.trials if t.number != killed.number]
    assert {t.state.name for t in others} == {"COMPLETE"}, logs
    assert len(others) == 3 + 3 + done_before, "every worker ran its n_trials (the victim up to the kill)"
    mine = lambda w: sorted(t.number for t in others if worker_pid(t) == w.pid)  # noqa: E731
    assert len(mine(survivor)) == len(mine(restarted)) == 3, logs
    assert min(mine(restarted)) > killed.number, "the restarted worker continues the numbering"
    marked = [w.name for w in (survivor, restarted) if "was left RUNNING by a dead worker" in w.output()]
    assert len(marked) == 1, f"the stale trial is failed by exactly one heartbeat check: {marked}\n{logs}"

    client = MlflowClient()
    for key in ("mlflow_run_id", "mlflow_parent_run_id"):  # the killed trial's run and its worker's run
        status = client.get_run(killed.user_attrs[key]).info.status
        assert status in ("KILLED", "FAILED"), f"{key} of the killed trial left {status}"
    runs = {r.data.tags["sweep_trial"]: r for r in sweep_runs(client, "killed", "trial")}
    assert sorted(runs) == sorted(str(n) for n in by_number), "one nested run per trial, the killed one too"
    for trial in others:
        assert runs[str(trial.number)].info.run_id == trial.user_attrs["mlflow_run_id"]
        assert runs[str(trial.number)].info.status == "FINISHED"
    parents = {r.info.run_id: r.info.status for r in sweep_runs(client, "killed", "parent")}
    assert sorted(parents.values()) == ["FINISHED", "FINISHED", "KILLED"], parents

    assert_best_registered_once(client, scale_project, study)


# The workers' MLflow client retries an HTTP request that finds the server gone (connection
# refused, dropped) or failing (429, 5xx) MLFLOW_HTTP_REQUEST_MAX_RETRIES times, sleeping
# BACKOFF_FACTOR * 2**(n-1) s (+ up to BACKOFF_JITTER s) before retry n >= 2 (urllib3, at most
# 120 s). 8 retries at factor 1 (the smallest: it is an integer) sleep 0, 2, 4, ..., 64, 120 s,
# about 4 minutes in all: well past a restart of the server (30-40 s on a busy 2-core machine,
# most of it the server's own start-up), and the first retry after it is back comes within half
# the downtime. MLflow's defaults (7 retries, factor 2) survive it too, only slower to notice.
# Each request waits at most MLFLOW_HTTP_REQUEST_TIMEOUT s for an answer.
RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "8",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def test_workers_wait_out_a_restart_of_the_mlflow_server_and_log_each_trial_once(
    scale_project, stores, workers
):
    sweep = params(stores, "restart", SMALL_MLP, n_trials=2)
    workers += [Worker(scale_project, sweep, f"w{i}", env=RETRIES) for i in range(2)]
    open_study_marker(workers[0])
    watch = StudyWatch(stores.optuna_url, "restart")
    watch.wait_inside(workers)
    stores.server.stop()
    time.sleep(3)
    assert all(w.proc.poll() is None for w in workers), "\n".join(w.tail() for w in workers)
    stores.server.start()
    finish(workers)
    logs = "\n".join(w.tail() for w in workers)
    # urllib3's warning for each retry: the outage was met, not slept through inside a trial
    assert any("Retrying (Retry(" in w.output() for w in workers), f"no request met the outage\n{logs}"

    study = optuna.load_study(study_name="restart", storage=stores.optuna_url)
    assert sorted(t.number for t in study.trials) == list(range(4)), logs
    assert {t.state.name for t in study.trials} == {"COMPLETE"}, f"a trial lost to the restart\n{logs}"

    client = MlflowClient()
    runs = sweep_runs(client, "restart", "trial")
    tried = sorted(r.data.tags["sweep_trial"] for r in runs)
    assert tried == sorted(str(t.number) for t in study.trials), f"a trial logged twice or lost: {tried}"
    by_trial = {r.data.tags["sweep_trial"]: r for r in runs}
    for trial in study.trials:
        run = by_trial[str(trial.number)]
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"] and run.info.status == "FINISHED"
        assert run.data.metrics["val_accuracy"] == pytest.approx(trial.value)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == list(range(trial.user_attrs["history"]["epochs_run"])), "a curve logged twice"
    parents = sweep_runs(client, "restart", "parent")
    assert sorted(r.info.status for r in parents) == ["FINISHED", "FINISHED"], parents
    assert_best_registered_once(client, scale_project, study)
