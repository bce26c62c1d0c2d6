"""`kedro run --pipelines retrain` and `rollback` through the real CLI, in a scratch project with
its own SQLite MLflow store: each rule of the promotion, the decision recorded, the champion's own
recipe, one retrain at a time, a SIGKILL at every stage, three scheduled cycles over batches."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_digits

from kedro_project import kedro_run, kill_at, start_run

pytestmark = pytest.mark.slow

NAME = "sparsetrain-classifier"
WEAK = "training.epochs=1,sparsity.strength=0.03"  # a first champion a good recipe beats
WORSE = "retrain.params=configured,training.epochs=1,sparsity.strength=0.3,registry.allow_degenerate=true"
BETTER = "retrain.params=configured"  # the configured recipe: 30 epochs, strength 1e-3


def retrain(project: Path, params: str | None = None, pipeline: str = "retrain"):
    return kedro_run(project, params, args=("--pipelines", pipeline))


def ok(result) -> None:
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def aliases() -> dict[str, str]:
    return {alias: str(version) for alias, version in MlflowClient().get_registered_model(NAME).aliases.items()}


def retrain_runs() -> pd.DataFrame:
    runs = mlflow.search_runs(search_all_experiments=True, order_by=["start_time ASC"])
    return runs[runs.get("tags.retrain_decision", pd.Series(dtype=str)).notna()] if len(runs) else runs


def decision_file(run_id: str, dst: Path) -> dict:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="retrain/decision.json", dst_path=str(dst))
    return json.loads(Path(path).read_text())


def one_line_error(result, *named: str) -> str:
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    for name in named:
        assert name in line
    return line


def test_first_kept_promoted_then_rolled_back(project, tmp_path):
    ok(retrain(project, WEAK))
    assert aliases() == {"champion": "1", "challenger": "1"}
    ok(retrain(project, WORSE))
    assert aliases() == {"champion": "1", "challenger": "2"}
    ok(retrain(project, BETTER))
    assert aliases() == {"champion": "3", "challenger": "3", "previous_champion": "1"}

    runs = retrain_runs()
    assert list(runs["tags.retrain_decision"]) == ["first", "kept", "promoted"]
    client = MlflowClient()
    for (_, run), version in zip(runs.iterrows(), ("1", "2", "3"), strict=True):
        record = decision_file(run.run_id, tmp_path / version)
        assert record["decision"] == run["tags.retrain_decision"]
        assert record["challenger"]["version"] == version and record["challenger"]["run_id"] == run.run_id
        assert record["rule"] == {"metric": "test_accuracy", "minimize": False, "min_delta": 0.0, "max_density": None}
        assert record["data_window"]["source"] == "digits" and record["data_window"]["rows"] == 1797
        tags = client.get_model_version(NAME, version).tags
        assert tags["retrain_decision"] == record["decision"]
        assert float(tags["challenger_test_accuracy"]) == pytest.approx(run["metrics.challenger_test_accuracy"])
    kept, promoted = runs.iloc[1], runs.iloc[2]
    # both scored on the same test rows: the champion (v1) scores the same in both retrains
    assert kept["metrics.champion_test_accuracy"] == promoted["metrics.champion_test_accuracy"]
    assert kept["metrics.challenger_test_accuracy"] <= kept["metrics.champion_test_accuracy"]
    assert promoted["metrics.challenger_test_accuracy"] > promoted["metrics.champion_test_accuracy"]
    assert promoted["metrics.challenger_test_accuracy"] == promoted["metrics.test_accuracy"]
    assert np.isnan(runs.iloc[0]["metrics.champion_test_accuracy"])  # no champion to score

    ok(retrain(project, pipeline="rollback"))
    assert aliases() == {"champion": "1", "challenger": "3"}
    rollback = retrain_runs().iloc[-1]
    assert rollback["tags.retrain_decision"] == "rolled_back" and rollback["status"] == "FINISHED"
    record = decision_file(rollback.run_id, tmp_path / "rollback")
    assert record["champion"]["version"] == "1" and record["replaced"]["version"] == "3"
    assert client.get_model_version(NAME, "3").tags["rolled_back_by_run"] == rollback.run_id
    one_line_error(retrain(project, pipeline="rollback"), "no 'previous_champion'", NAME)
    assert aliases()["champion"] == "1"


def test_the_challenger_trains_with_the_champion_recipe(project):
    ok(kedro_run(project, "training.epochs=3,sparsity.strength=1e-4,model.init=xavier_uniform"))
    ok(retrain(project))  # configured: 30 epochs, strength 1e-3, kaiming; the champion's wins
    run = retrain_runs().iloc[-1]
    assert run["tags.retrain_recipe"] == "champion v1"
    assert run["params.training.epochs"] == "3" and float(run["params.sparsity.strength"]) == 1e-4
    assert run["params.model.init"] == "xavier_uniform" and run["params.retrain.params"] == "champion"
    assert run["tags.mlflow.runName"] == "retrain-linear-l1-1e-04-xavier_uniform"
    # same recipe, same data, same seeds: the same model, so a tie, and a tie keeps the champion
    assert run["metrics.challenger_test_accuracy"] == run["metrics.champion_test_accuracy"]
    assert run["tags.retrain_decision"] == "kept" and aliases()["champion"] == "1"


def test_a_second_retrain_meanwhile_stops_at_once(project):
    ok(retrain(project, WEAK))
    # long enough to outlast two refused starts on a loaded machine; killed below
    slow = "retrain.params=configured,training.epochs=20000,training.early_stopping=null"
    first = start_run(project, slow, ("--pipelines", "retrain"))
    try:
        assert any("epoch 2/" in line for line in first.stdout), "the first retrain did not train"
        n_runs = len(mlflow.search_runs(search_all_experiments=True))
        for pipeline in ("retrain", "rollback"):
            started = time.monotonic()
            refused = retrain(project, pipeline=pipeline)
            assert first.poll() is None, "the first retrain ended: nothing held the lock"
            line = one_line_error(refused, f"another retrain or rollback of model '{NAME}'")
            assert f"pid {first.pid}" in line and time.monotonic() - started < 30
        assert len(mlflow.search_runs(search_all_experiments=True)) == n_runs, "a refused retrain opened a run"
    finally:
        first.kill()
        first.wait()


@pytest.mark.parametrize(
    "stage, marker",
    [
        ("training", "epoch 2/"),
        ("champion scoring", "score_champion"),
        ("model logging", "Logging the served model"),
        ("version created", "Created version"),
    ],
)
def test_a_sigkill_at_any_stage_never_moves_the_champion(project, stage, marker):
    ok(retrain(project, WEAK))
    kill_at(project, BETTER, marker, ("--pipelines", "retrain"))
    champion = aliases()["champion"]
    client = MlflowClient()
    if champion != "1":  # the kill landed after the last step: then the retrain was complete
        assert stage == "version created"
        run = client.get_run(client.get_model_version(NAME, champion).run_id)
        assert run.info.status == "FINISHED" and run.data.tags["retrain_decision"] == "promoted"
    for version in client.search_model_versions(f"name = '{NAME}'"):
        run = client.get_run(version.run_id)
        assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
        assert "retrain_decision" in version.tags
    ok(retrain(project, BETTER))  # the lock died with the killed run; the orphan is closed
    statuses = set(mlflow.search_runs(search_all_experiments=True).status)
    assert "RUNNING" not in statuses
    if stage != "version created":
        assert "KILLED" in statuses
    assert retrain_runs().iloc[-1]["tags.retrain_decision"] in ("promoted", "kept")


def write_batch(project: Path, name: str, rows: slice, shuffle_labels: bool = False) -> None:
    digits = load_digits()
    frame = pd.DataFrame(digits.data[rows], columns=[f"p{i}" for i in range(64)])
    labels = digits.target[rows]
    if shuffle_labels:  # a labelling fault upstream: every label of the batch is wrong
        labels = (labels + 1 + np.random.default_rng(0).integers(0, 9, len(labels))) % 10
    frame["digit"] = labels
    folder = project / "data" / "01_raw" / "batches"
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / name, index=False)


def test_three_scheduled_cycles_first_promoted_kept(project):
    params = "data.source=batches,data.target=digit,training.epochs=10,retrain.params=configured"
    write_batch(project, "2026-12-01.csv", slice(0, 150))
    ok(retrain(project, params))  # cycle 1: 150 rows
    write_batch(project, "2026-12-02.csv", slice(150, 1200))
    ok(retrain(project, params))  # cycle 2: more data, a better model
    write_batch(project, "2026-12-03.csv", slice(1200, 1797), shuffle_labels=True)
    ok(retrain(project, params))  # cycle 3: a corrupted batch
    runs = retrain_runs()
    assert list(runs["tags.retrain_decision"]) == ["first", "promoted", "kept"]
    assert list(runs["tags.data_rows"]) == ["150", "1200", "1797"]
    assert runs.iloc[1]["tags.data_window"] == "2026-12-01.csv..2026-12-02.csv (2 batches)"
    assert len(set(runs["tags.data_fingerprint"])) == 3
    assert aliases() == {"champion": "2", "challenger": "3", "previous_champion": "1"}
    kept = MlflowClient().get_model_version(NAME, "3")
    assert kept.tags["retrain_decision"] == "kept" and kept.tags["champion_version"] == "2"


def test_the_window_uses_the_last_batches(project):
    write_batch(project, "a.csv", slice(0, 600))
    write_batch(project, "b.csv", slice(600, 1200))
    ok(retrain(project, "data.source=batches,data.target=digit,training.epochs=2,retrain.window=1"))
    run = retrain_runs().iloc[-1]
    assert run["tags.data_window"] == "b.csv..b.csv (1 batches)" and run["tags.data_rows"] == "600"


def test_a_regressor_retrains_on_rmse_and_the_metric_must_fit_the_task(project):
    regression = "data.source=synthetic,data.task=regression,sparsity.strength=1e-4,training.epochs=5"
    one_line_error(retrain(project, regression), "retrain.metric 'test_accuracy'", "test_rmse")
    assert len(mlflow.search_runs(search_all_experiments=True)) == 0
    ok(retrain(project, f"{regression},retrain.metric=test_rmse"))
    (version,) = MlflowClient().search_model_versions("name = 'sparsetrain-regressor'")
    assert version.tags["retrain_decision"] == "first" and "challenger_test_rmse" in version.tags
