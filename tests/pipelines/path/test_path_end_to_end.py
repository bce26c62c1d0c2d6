"""`kedro run --pipelines path` through the real CLI, in a scratch project with its own SQLite
MLflow store: the artifacts under path/, the metrics, the choice against the logged table, and
the registered model (raw rows in) scoring what the run logged."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from kedro_project import kedro_run
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

ARTIFACTS = {"path/coefficients.png", "path/metric.png", "path/nonzeros.png", "path/table.csv"}


def ok(result) -> None:
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def only_run() -> pd.Series:
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1
    return runs.iloc[0]


def artifacts(run_id: str, folder: str | None = None) -> set[str]:
    found = set()
    for item in MlflowClient().list_artifacts(run_id, folder):
        found |= artifacts(run_id, item.path) if item.is_dir else {item.path}
    return found


def table(run_id: str, dst: Path) -> pd.DataFrame:
    return pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="path/table.csv",
                                                           dst_path=str(dst)))


def run_config(run_id: str, dst: Path) -> dict:
    import json

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="run_config.json",
                                               dst_path=str(dst))
    return json.loads(Path(path).read_text())


def test_path_on_digits_chooses_by_1se_and_registers_the_chosen_model(project, tmp_path):
    from sparsetrain.core.data import load_digits_dataset, split_dataset
    from sparsetrain.core.path import one_se_index

    ok(kedro_run(project, "path.n_strengths=8", args=("--pipelines", "path")))
    run = only_run()
    m = {k.removeprefix("metrics."): v for k, v in run.items() if k.startswith("metrics.")}
    assert run["tags.mlflow.runName"] == "path-l1-1se" and run.status == "FINISHED"
    assert ARTIFACTS <= artifacts(run.run_id)

    t = table(run.run_id, tmp_path / "t")
    assert len(t) == 8 and (np.diff(t.strength) < 0).all()
    assert t.strength.iloc[0] == pytest.approx(m["path_lambda_max"])
    assert t.strength.iloc[-1] == pytest.approx(1e-3 * m["path_lambda_max"])
    assert t.nonzeros.iloc[0] == 0 and t.nonzeros.iloc[-1] > 0
    assert set(t.metric) == {"accuracy"} and (t.cv_sem > 0).all() and (t.seconds > 0).all()

    chosen = one_se_index(t.strength, t.cv_mean, t.cv_sem, maximize=True)
    assert t.chosen.tolist() == [i == chosen for i in range(8)] and "1se" in t.rule.iloc[chosen]
    assert m["path_chosen_strength"] == pytest.approx(t.strength.iloc[chosen])
    assert m["path_1se_strength"] == pytest.approx(t.strength.iloc[chosen])
    assert m["path_min_strength"] == pytest.approx(t.strength.iloc[int(t.cv_mean.to_numpy().argmax())])
    assert m["path_cv_accuracy_at_choice"] == pytest.approx(t.cv_mean.iloc[chosen])
    assert m["path_chosen_nonzeros"] == t.nonzeros.iloc[chosen] == m["prunable_nonzero"]
    assert m["path_cv_folds"] == 5  # evaluation.cv_folds is 0 (off): the default 5 folds
    assert m["kkt_violation"] <= 1e-7 and m["test_accuracy"] > 0.85

    client = MlflowClient()
    version = client.get_model_version("sparsetrain-classifier", "1")
    assert version.run_id == run.run_id and version.tags["path_choose"] == "1se"
    assert float(version.tags["path_strength"]) == pytest.approx(m["path_chosen_strength"], rel=1e-5)
    registered = run_config(run.run_id, tmp_path / "c")
    assert registered["sparsity"]["strength"] == pytest.approx(m["path_chosen_strength"])

    # The registered model takes raw rows and scores on the test split what the run logged.
    splits = split_dataset(load_digits_dataset(), val_size=0.1, test_size=0.2, seed=42)
    model = mlflow.pyfunc.load_model("models:/sparsetrain-classifier@champion")
    predicted = np.asarray(model.predict(splits.X_test.astype(np.float64))).astype(int)
    assert (predicted == splits.y_test).mean() == pytest.approx(m["test_accuracy"])


def test_path_for_regression_with_elasticnet_min_rule_and_configured_folds(project, tmp_path):
    params = (
        "data.source=synthetic,data.task=regression,sparsity.penalty=elasticnet,path.choose=min,"
        "path.n_strengths=6,evaluation.cv_folds=3"
    )
    ok(kedro_run(project, params, args=("--pipelines", "path")))
    run = only_run()
    m = {k.removeprefix("metrics."): v for k, v in run.items() if k.startswith("metrics.")}
    assert run["tags.mlflow.runName"] == "path-elasticnet-min"
    assert ARTIFACTS <= artifacts(run.run_id)
    t = table(run.run_id, tmp_path / "t")
    best = int(t.cv_mean.to_numpy().argmin())  # rmse: smaller is better
    assert set(t.metric) == {"rmse"} and t.chosen.iloc[best]
    assert m["path_chosen_strength"] == pytest.approx(t.strength.iloc[best])
    assert m["path_cv_rmse_at_choice"] == pytest.approx(t.cv_mean.iloc[best])
    assert m["path_cv_folds"] == 3 and m["test_r2"] > 0.5
    assert MlflowClient().get_model_version("sparsetrain-regressor", "1").run_id == run.run_id


@pytest.mark.parametrize(
    "params,named",
    [("model.kind=mlp", "model.kind 'mlp'"), ("sparsity.penalty=l0", "sparsity.penalty 'l0'")],
    ids=["mlp", "l0"],
)
def test_path_refuses_what_has_no_path_in_one_line(project, params, named):
    result = kedro_run(project, params, args=("--pipelines", "path"))
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert named in line
    assert MlflowClient().search_registered_models() == []
    assert len(mlflow.search_runs(search_all_experiments=True)) == 0  # refused before a run opens
