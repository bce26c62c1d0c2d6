"""Data-parallel `kedro run`s through the real CLI, with 2 CPU ranks: spawned by the run itself
(``training.distributed.world_size``) or started by torchrun (``-m sparsetrain.train``). Only
rank 0 logs: one MLflow run, one version; a rank that dies fails the run and registers nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import psutil
import pytest
from kedro_project import kedro_run, start_run
from mlflow import MlflowClient

from sparsetrain.core.distributed import free_port

pytestmark = pytest.mark.slow

SMALL_MLP = "model.kind=mlp,model.hidden=[32],training.epochs=2"


def finished_runs():
    runs = mlflow.search_runs(search_all_experiments=True)
    return runs[runs.status == "FINISHED"]


def test_a_run_on_two_ranks_is_one_run_and_one_version(project):
    result = kedro_run(project, f"{SMALL_MLP},training.distributed.world_size=2")
    assert result.returncode == 0, result.stderr[-2000:]
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs.iloc[0].status == "FINISHED"
    assert runs.iloc[0]["params.training.distributed.world_size"] == "2"
    assert float(runs.iloc[0]["metrics.test_accuracy"]) > 0.8
    assert len(MlflowClient().search_model_versions("")) == 1
    assert "epoch 2/2" in result.stdout + result.stderr  # rank 0's progress, shown by the run


def test_torchrun_ranks_make_one_run_logged_by_rank_0(project):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), "-m", "sparsetrain.train", "--params", SMALL_MLP]
    env = os.environ.copy()
    result = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1, runs[["status", "tags.mlflow.runName"]]
    assert runs.iloc[0].status == "FINISHED"
    assert runs.iloc[0]["params.training.distributed.world_size"] == "2"
    assert len(MlflowClient().search_model_versions("")) == 1


def test_sparsetrain_train_outside_torchrun_says_how_to_start_it(project):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
    result = subprocess.run([sys.executable, "-m", "sparsetrain.train"], cwd=project, capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 1 and "torchrun --nproc-per-node N" in result.stderr
    assert len(mlflow.search_runs(search_all_experiments=True)) == 0


def rank_processes(parent: psutil.Process) -> list[psutil.Process]:
    """The spawned ranks among the run's children (not multiprocessing's resource tracker)."""
    return [p for p in parent.children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())]


def test_a_rank_that_dies_fails_the_run_in_one_line_and_registers_nothing(project):
    long_run = "model.kind=mlp,model.hidden=[32],training.epochs=500,training.early_stopping=null"
    proc = start_run(project, f"{long_run},training.distributed.world_size=2")
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "epoch 2/500" in line:
            break
    ranks = rank_processes(psutil.Process(proc.pid))
    assert len(ranks) == 2, "".join(lines)[-2000:]
    ranks[-1].send_signal(signal.SIGKILL)
    started = time.monotonic()
    lines += proc.stdout.readlines()
    proc.wait(timeout=120)
    output = "".join(lines)
    assert time.monotonic() - started < 60, "the run went on after a rank died"
    assert proc.returncode == 2, output[-2000:]
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "died (signal SIGKILL)" in errors[0], output[-2000:]
    runs = mlflow.search_runs(search_all_experiments=True)
    assert list(runs.status) == ["FAILED"]
    assert MlflowClient().search_model_versions("") == []
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in ranks)
