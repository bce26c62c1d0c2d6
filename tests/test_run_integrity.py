"""Every `kedro run` an isolated, atomic, reproducible transaction, checked through the real CLI
in a scratch project with its own SQLite MLflow store: concurrent runs equal solo runs, a kill at
any point leaves no version without its finished run, the same seed gives the same bytes."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from kedro_project import kedro_run, kill_at, start_run

pytestmark = pytest.mark.slow

SMALL_MLP = "training.epochs=3,model.kind=mlp,model.hidden=[32]"
# Timings differ from run to run; everything else a run logs must not.
TIMED = ("train_seconds", "latency_ms_p50", "latency_ms_p50_sparse", "throughput_per_s", "throughput_per_s_sparse")


def runs_by_seed() -> dict[str, list]:
    runs = mlflow.search_runs(search_all_experiments=True, order_by=["start_time ASC"])
    by_seed: dict[str, list] = {}
    for _, run in runs[runs.status == "FINISHED"].iterrows():
        by_seed.setdefault(run["params.training.seed"], []).append(run)
    return by_seed


def curves(run_id: str) -> dict[str, list[float]]:
    client = MlflowClient()
    return {name: [m.value for m in client.get_metric_history(run_id, name)] for name in ("train_loss", "val_loss")}


def export_sha256(run_id: str, dst: Path) -> str:
    folder = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="sparse_export", dst_path=str(dst))
    return hashlib.sha256((Path(folder) / "model.sparse.safetensors").read_bytes()).hexdigest()


def test_concurrent_runs_equal_solo_runs_byte_for_byte(project, tmp_path):
    for seed in (42, 7):
        solo = kedro_run(project, f"{SMALL_MLP},training.seed={seed}")
        assert solo.returncode == 0, solo.stderr[-2000:]
    together = [start_run(project, f"{SMALL_MLP},training.seed={seed}") for seed in (42, 7)]
    for proc in together:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-2000:]
    by_seed = runs_by_seed()
    for seed in ("42", "7"):
        alone, concurrent = by_seed[seed]
        assert curves(alone.run_id) == curves(concurrent.run_id)
        assert curves(alone.run_id)["train_loss"], "no loss history logged"
        metrics = [c for c in alone.index if c.startswith("metrics.") and c.split(".", 1)[1] not in TIMED]
        assert alone[metrics].to_dict() == concurrent[metrics].to_dict()
        assert export_sha256(alone.run_id, tmp_path / "a") == export_sha256(concurrent.run_id, tmp_path / "b")
    assert curves(by_seed["42"][0].run_id) != curves(by_seed["7"][0].run_id)
    # each run's files are its own: one folder per run id, never a shared one
    folders = sorted(p.name for p in (project / "data" / "08_reporting" / "runs").iterdir())
    assert folders == sorted(r.run_id for runs in by_seed.values() for r in runs)
    assert not (project / "data" / "08_reporting" / "plots").exists()


@pytest.mark.parametrize(
    "moment, marker, params",
    [
        ("training", "epoch 2/", "training.epochs=200,training.early_stopping=null"),
        ("model logging", "Logging the served model", "training.epochs=2"),
        ("version created", "Created version", "training.epochs=2"),
    ],
)
def test_a_killed_run_leaves_no_version_without_its_finished_run(project, moment, marker, params):
    kill_at(project, params, marker)
    time.sleep(0.5)
    after = kedro_run(project, "training.epochs=2")
    assert after.returncode == 0, after.stderr[-2000:]
    client = MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True)
    assert "RUNNING" not in set(runs.status), f"killed during {moment}: a run is still RUNNING"
    if moment != "version created":
        assert "KILLED" in set(runs.status), "the next run did not mark the orphan KILLED"
    for version in client.search_model_versions(""):
        run = client.get_run(version.run_id)
        assert run.info.status == "FINISHED"
        assert {"test_accuracy", "density"} <= set(run.data.metrics)
        assert {"density", "test_accuracy"} <= set(run.data.tags)
        assert {"density", "test_accuracy", "run_id"} <= set(version.tags)
    finished = runs[runs.status == "FINISHED"]
    assert len(client.search_model_versions("")) == len(finished)


def one_line_error(result: subprocess.CompletedProcess, *named: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for name in named:
        assert name in errors[0]
    return errors[0]


@pytest.mark.parametrize(
    "params, named",
    [
        ("registry.model_name=a/b", ("registry.model_name", "'/'")),
        ("nosuchsection.x=1", ("nosuchsection",)),
        ("evaluaton.cv_folds=3", ("evaluaton", "did you mean 'evaluation'")),
        ("sparsity.strenght=1e-3", ("sparsity.strenght", "did you mean 'strength'")),
        ("trainig.epochs=2", ("trainig", "did you mean 'training'")),
    ],
)
def test_bad_or_unknown_keys_are_one_line_before_any_run(project, params, named):
    one_line_error(kedro_run(project, f"training.epochs=1,{params}"), *named)
    assert len(mlflow.search_runs(search_all_experiments=True)) == 0


def test_a_degenerate_model_is_refused_for_registration_but_its_run_stays(project):
    result = kedro_run(project, "training.epochs=2,sparsity.strength=1e9")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Not registered" in result.stdout + result.stderr
    (run,) = MlflowClient().search_runs([mlflow.get_experiment_by_name("sparsetrain").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["density"] == 0
    assert run.data.tags["registration"].startswith("refused")
    assert MlflowClient().search_model_versions("") == []
    forced = kedro_run(project, "training.epochs=2,sparsity.strength=1e9,registry.allow_degenerate=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert len(MlflowClient().search_model_versions("")) == 1


def test_a_regressor_registers_under_the_regressor_name(project):
    result = kedro_run(project, "training.epochs=2,data.source=synthetic,data.task=regression,sparsity.strength=1e-4")
    assert result.returncode == 0, result.stderr[-2000:]
    (version,) = MlflowClient().search_model_versions("")
    assert version.name == "sparsetrain-regressor"
    assert "test_r2" in version.tags


def write_csv(project: Path, text: str) -> Path:
    path = project / "data" / "01_raw" / "t.csv"
    path.write_text(text)
    return path


def rows(values, sep=",") -> str:
    """A small two-class table: columns a, b, label; ``values`` fills column a."""
    lines = [sep.join(("a", "b", "label"))]
    lines += [sep.join((str(v), str(i % 7), str(i % 2))) for i, v in enumerate(values)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "case, make, named",
    [
        ("semicolons", lambda p: write_csv(p, rows(range(40), sep=";")), ("data.separator=';'",)),
        ("directory", lambda p: p / "data" / "01_raw", ("data.path", "is a directory")),
        ("beyond float32", lambda p: write_csv(p, rows([1e308] + list(range(39)))), ("'a'", "float32")),
        ("yaml tag", None, ("data.path", "YAML tags are not allowed")),
    ],
)
def test_bad_data_is_one_line_naming_the_column_or_key(project, case, make, named):
    if make is None:
        params = 'data.path=!!python/object/apply:os.system ["echo PWNED"]'
    else:
        params = f"data.source=table,data.target=label,data.path={make(project)}"
    one_line_error(kedro_run(project, f"training.epochs=1,{params}"), *named)
    assert not (project / "PWNED").exists()
    # the data is read inside the run: it ends FAILED at its first node, before any training
    runs = mlflow.search_runs(search_all_experiments=True)
    assert set(runs.status) <= {"FAILED"} and "metrics.train_loss" not in runs
    assert MlflowClient().search_model_versions("") == []


def test_values_near_float32_max_train(project):
    values = [3.3e38 if i % 2 else -3.3e38 for i in range(60)]
    path = write_csv(project, rows(values))
    result = kedro_run(project, f"training.epochs=2,data.source=table,data.target=label,data.path={path}")
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = MlflowClient().search_runs([mlflow.get_experiment_by_name("sparsetrain").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["train_loss"] == run.data.metrics["train_loss"]
