"""`kedro run --pipelines sweep` end to end, in a scratch copy of the project: the tracked
result, a bad sweep, a worker killed mid-trial, two workers on one study."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

FAST = "training.epochs=2,training.early_stopping=null"
STORAGE = "sqlite:///data/08_reporting/sweep/optuna.db"  # the default, relative to the project


def run_files(project: Path, run_id: str) -> Path:
    """Where a parent run writes its sweep reports: its own folder, never a shared one."""
    return project / "data/08_reporting/runs" / run_id / "sweep"


def sweep_cmd(params: str) -> list[str]:
    return [sys.executable, "-m", "kedro", "run", "--pipelines", "sweep", "--params", params]


def kedro_sweep(project: Path, params: str, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        sweep_cmd(params), cwd=project, capture_output=True, text=True, timeout=400, env=os.environ.copy()
    )
    assert result.returncode == expect, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def start_sweep(project: Path, params: str) -> subprocess.Popen:
    return subprocess.Popen(
        sweep_cmd(params),
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def all_runs() -> pd.DataFrame:
    return mlflow.search_runs(search_all_experiments=True)


def artifacts(run_id: str) -> set[str]:
    client = MlflowClient()
    found = set()
    for item in client.list_artifacts(run_id):
        found.add(item.path)
        if item.is_dir:
            found |= {sub.path for sub in client.list_artifacts(run_id, item.path)}
    return found


def test_sweep_tracks_trials_reports_and_registers_the_best(project):
    result = kedro_sweep(
        project,
        "sweep.study_name=e2e,sweep.sampler=grid,sweep.n_trials=10,"
        f"sweep.space.sparsity.strength=[1.0e-3],sweep.space.model.init=[xavier_uniform],{FAST}",
    )

    runs = all_runs()
    trials = runs[runs["tags.mlflow.parentRunId"].notna()]
    parent = runs[runs["tags.mlflow.parentRunId"].isna()].iloc[0]
    # the grid: 5 penalties x 1 strength x 1 init, each once, then the study stops
    assert len(trials) == 5 and set(trials["tags.mlflow.parentRunId"]) == {parent.run_id}
    assert set(trials["params.sparsity.penalty"]) == {"l1", "l2", "elasticnet", "group_lasso", "l0"}
    assert trials[["params.model.init", "metrics.val_accuracy", "metrics.density"]].notna().all().all()
    assert "linear-l0-1e-03-xavier_uniform" in set(trials["tags.mlflow.runName"])
    assert parent["tags.mlflow.runName"] == "sweep-e2e"
    assert {
        "sweep/trials.csv",
        "sweep/frontier.png",
        "sweep/best_params.yml",
        "sweep/pareto_set.yml",
        "sweep/summary.json",
    } <= artifacts(parent.run_id)
    assert parent["metrics.best_val_accuracy"] == pytest.approx(trials["metrics.val_accuracy"].max())
    assert 0.0 < parent["metrics.test_accuracy"] <= 1.0
    assert result.stdout.count("sweep trial") + result.stderr.count("sweep trial") == 5  # a line per trial

    assert trials["tags.sparsetrain.pid"].notna().all(), "trial runs carry the process tags"
    assert sorted(p.name for p in (project / "data/08_reporting/sweep").iterdir()) == ["optuna.db"]

    client = MlflowClient()
    version = client.get_model_version("sparsetrain-classifier", "1")
    assert version.tags["sweep_study"] == "e2e" and version.run_id == parent.run_id
    assert {"density", "test_accuracy", "run_id", "sweep_trial", "sweep_val_accuracy"} <= set(version.tags)
    assert client.get_run(parent.run_id).info.status == "FINISHED"
    # registration last: every metric of the parent run was logged before its version existed
    last_metric = max(
        m.timestamp for key in client.get_run(parent.run_id).data.metrics
        for m in client.get_metric_history(parent.run_id, key)
    )
    assert last_metric <= version.creation_timestamp
    best = yaml.safe_load((run_files(project, parent.run_id) / "best_params.yml").read_text())
    winner = trials.loc[trials["metrics.val_accuracy"].idxmax()]
    assert best["run"]["params"]["sparsity"]["penalty"] == parent["tags.sweep_best_run_name"].split("-")[1]
    assert winner["metrics.val_accuracy"] == pytest.approx(parent["metrics.best_val_accuracy"])


@pytest.mark.parametrize(
    "params, key",
    [
        ("sweep.sampler=bayes", "sweep.sampler"),
        ("data.source=synthetic,data.task=regression", "sweep.objective"),
    ],
)
def test_bad_sweep_fails_before_any_trial(project, params, key):
    result = kedro_sweep(project, params, expect=2)
    assert f"Error: {key}" in result.stderr and "Traceback" not in result.stderr
    assert not (project / "data/08_reporting/sweep/optuna.db").exists()
    assert len(all_runs()) == 0


def wait_for_running_trial(study_name: str, timeout_s: float = 240) -> optuna.trial.FrozenTrial:
    """The first RUNNING trial once its nested MLflow run exists (the trial records the run's id
    a moment after it starts: on a loaded machine, seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            running = optuna.load_study(study_name=study_name, storage=STORAGE).get_trials(
                states=(optuna.trial.TrialState.RUNNING,)
            )
            if running and "mlflow_run_id" in running[0].user_attrs:
                return running[0]
        except (KeyError, Exception):  # the storage or the study does not exist yet
            pass
        time.sleep(0.5)
    raise AssertionError("no trial started")


def test_a_killed_sweep_loses_only_its_trial_and_resumes(project):
    worker = start_sweep(
        project,
        "sweep.study_name=kill,sweep.heartbeat_s=1,sweep.n_trials=3,"
        "training.epochs=5000,training.early_stopping=null",
    )
    try:
        in_flight = wait_for_running_trial("kill")
        time.sleep(2.0)  # mid-trial, its heartbeat recorded
    finally:
        worker.kill()  # SIGKILL: no cleanup of any kind
        worker.wait()
    killed_at = time.monotonic()
    study = optuna.load_study(study_name="kill", storage=STORAGE)
    assert study.trials[in_flight.number].state.name == "RUNNING"  # what a dead worker leaves

    # A longer heartbeat for the live worker: on a loaded machine a 1 s beat can starve and a
    # live trial look dead. The new worker judges the dead trial by its own grace (2 x 3 s): it
    # starts and finishes two quick trials in less than that, so wait until the dead trial is
    # stale (+1 s: SQLite's clock ticks in whole seconds).
    time.sleep(max(0.0, killed_at + 2 * 3 + 1.0 - time.monotonic()))
    kedro_sweep(project, f"sweep.study_name=kill,sweep.heartbeat_s=3,sweep.n_trials=2,{FAST}")

    trials = optuna.load_study(study_name="kill", storage=STORAGE).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    runs = all_runs()
    assert "RUNNING" not in set(runs.status), "the killed worker's runs are all closed"
    (second,) = runs[runs["tags.mlflow.parentRunId"].isna() & (runs.status == "FINISHED")].run_id
    table = pd.read_csv(run_files(project, second) / "trials.csv")
    assert "heartbeat" in table.loc[table["number"] == in_flight.number, "fail_reason"].iloc[0]
    killed = MlflowClient().get_run(in_flight.user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED"
    assert MlflowClient().get_run(in_flight.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"


def test_a_resumed_sweep_registers_its_best_trial_once(project):
    conf = project / "conf" / "base" / "parameters_sweep.yml"
    text = conf.read_text()
    space = text[text.index("  space:"):]
    conf.write_text(text.replace(space, "  space:\n    sparsity.penalty: [l1]\n"))  # every trial the same
    for _ in range(2):
        kedro_sweep(project, f"sweep.study_name=once,sweep.n_trials=1,{FAST}")
    assert len(optuna.load_study(study_name="once", storage=STORAGE).trials) == 2
    (version,) = MlflowClient().search_model_versions("")
    assert version.tags["sweep_trial"] == "0"
    parents = all_runs()
    parents = parents[parents["tags.mlflow.parentRunId"].isna()].sort_values("start_time")
    assert parents["tags.registration"].tolist() == ["registered", "already registered as version 1"]


def test_two_workers_share_one_study(project):
    params = f"sweep.study_name=pair,sweep.n_trials=3,{FAST}"
    first = start_sweep(project, params)
    time.sleep(3.0)  # workers usually start apart; both still run their trials side by side
    second = start_sweep(project, params)
    for worker in (first, second):
        _, err = worker.communicate(timeout=400)
        assert worker.returncode == 0, err[-4000:]

    trials = optuna.load_study(study_name="pair", storage=STORAGE).trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    workers = pd.Series([t.user_attrs["worker"] for t in trials]).value_counts()
    assert list(workers) == [3, 3]
    runs = all_runs()
    nested = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert sorted(nested["tags.mlflow.parentRunId"].value_counts()) == [3, 3]
    assert nested["tags.sweep_trial"].astype(int).sort_values().tolist() == list(range(6))
    # each worker registers the best it saw; a trial is never registered twice
    trials_registered = [v.tags["sweep_trial"] for v in MlflowClient().search_model_versions("")]
    assert len(trials_registered) == len(set(trials_registered)) >= 1
    # each worker logged its own reports, from its own folder: never the other's file
    for parent in set(nested["tags.mlflow.parentRunId"]):
        logged = mlflow.artifacts.download_artifacts(
            run_id=parent, artifact_path="sweep/trials.csv", dst_path=str(project / "download" / parent)
        )
        assert Path(logged).read_bytes() == (run_files(project, parent) / "trials.csv").read_bytes()
        assert (pd.read_csv(logged)["mlflow_parent_run_id"] == parent).sum() == 3, "its own 3 trials"
