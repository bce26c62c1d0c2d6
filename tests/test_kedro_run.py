"""`kedro run` end to end in a scratch copy of the project, into a temporary MLflow store:
the default run, the served model, Fashion-MNIST, and every bad input the issue lists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from sparsetrain.core.data import FASHION_MNIST_DIRS
from sparsetrain.errors import SparsetrainError

from kedro_project import kedro_run, run_in_process

MODEL_NAME = "sparsetrain-classifier"
pytestmark = pytest.mark.slow


SERVE_WITHOUT_INSTALL = """
import importlib.util, sys
from pathlib import Path
model_dir, rows = sys.argv[1], sys.argv[2]
# Hide the installed (editable) sparsetrain: the model must bring its own code.
sys.path = [p for p in sys.path if not (Path(p) / "sparsetrain").is_dir()]
assert importlib.util.find_spec("sparsetrain") is None, "sparsetrain still importable"
import mlflow, numpy as np
model = mlflow.pyfunc.load_model(model_dir)
out = np.asarray(model.predict(np.load(rows))).astype(int)
import sparsetrain
print(",".join(map(str, out)))
print(sparsetrain.__file__)
"""


def load_where_sparsetrain_is_not_installed(model_dir: Path, X: np.ndarray) -> subprocess.CompletedProcess:
    """Load a logged model and predict in a fresh interpreter that cannot import sparsetrain."""
    rows = model_dir.parent / "rows.npy"
    np.save(rows, X)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", SERVE_WITHOUT_INSTALL, str(model_dir), str(rows)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=model_dir.parent)


def finished_runs() -> pd.DataFrame:
    runs = mlflow.search_runs(search_all_experiments=True)
    return runs[runs.status == "FINISHED"] if len(runs) else runs


def registered_versions() -> list:
    try:
        return MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")
    except mlflow.exceptions.MlflowException:
        return []


def test_default_run_trains_tracks_and_registers(project):
    result = kedro_run(project, "training.epochs=15")
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "warning" in line.lower()]
    assert not warnings, "a clean run printed warnings:\n" + "\n".join(warnings)
    runs = finished_runs()
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["metrics.test_accuracy"] >= 0.9
    assert run["metrics.density"] < 1.0
    assert run["params.sparsity.penalty"] == "l1"
    history = MlflowClient().get_metric_history(run.run_id, "val_loss")
    assert len(history) == int(run["metrics.epochs_run"])
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/training_curves.png", "plots/weight_mask.png"} <= artifacts

    (version,) = registered_versions()
    assert version.tags["density"] and version.tags["test_accuracy"]
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    assert (np.asarray(model.predict(X)).astype(int) == y).mean() >= 0.9
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@champion"))
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} >= {"mlflow", "torch", "numpy", "scikit-learn", "pandas"}
    assert not any(r.startswith("sparsetrain") for r in requirements)  # no index serves it: shipped as code
    served = load_where_sparsetrain_is_not_installed(model_dir, X[:50])
    assert served.returncode == 0, served.stderr[-2000:]
    predicted, origin = served.stdout.strip().splitlines()[-2:]
    assert np.array_equal(np.array(predicted.split(","), dtype=int), np.asarray(model.predict(X[:50])).astype(int))
    assert origin.startswith(str(model_dir))
    from sparsetrain.core.export import load_sparse

    sparse_file = mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path="sparse_export")
    network = load_sparse(Path(sparse_file) / "model.sparse.safetensors")
    assert network is not None


@pytest.mark.skipif(
    not any((Path(d) / "train-images-idx3-ubyte.gz").exists() for d in FASHION_MNIST_DIRS[:1]),
    reason="Fashion-MNIST IDX files absent: apt-get install dataset-fashion-mnist",
)
def test_fashion_mnist_with_pca(project):
    result = kedro_run(
        project,
        "data.source=fashion_mnist,data.max_train_samples=6000,compression.method=pca,"
        "compression.n_components=100,training.epochs=5",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = finished_runs().iloc[0]
    assert run["metrics.test_accuracy"] > 0.75
    assert run["metrics.compression_n_components"] == 100
    assert 0 < run["metrics.explained_variance_ratio"] < 1


def test_cli_prints_one_line_without_traceback(project):
    result = kedro_run(project, "sparsity.strength=-1")
    assert result.returncode != 0
    assert "Error: sparsity.strength" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(finished_runs()) == 0


def write_table(project: Path, frame: pd.DataFrame, name: str = "table.csv") -> str:
    path = project / "data" / "01_raw" / name
    frame.to_csv(path, index=False)
    return str(path)


def good_frame(rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"])
    frame["label"] = np.arange(rows) % 2
    return frame


BAD_TABLES = {
    "nan": (lambda f: f.assign(a=[np.nan] + list(f.a[1:])), "'a'"),
    "inf": (lambda f: f.assign(b=[np.inf] + list(f.b[1:])), "'b'"),
    "one_class": (lambda f: f.assign(label=0), "label"),
    "non_numeric": (lambda f: f.assign(c=["x"] * len(f)), "'c'"),
    "missing_target": (lambda f: f.drop(columns="label"), "label"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_bad_tables_fail_before_training(project, case):
    corrupt, named = BAD_TABLES[case]
    path = write_table(project, corrupt(good_frame()))
    with pytest.raises(SparsetrainError) as error:
        run_in_process({"data": {"source": "table", "path": path, "target": "label"}})
    assert named in str(error.value) and "\n" not in str(error.value)
    assert_nothing_recorded(project)


def test_empty_file_fails(project):
    path = project / "data" / "01_raw" / "empty.csv"
    path.write_text("")
    with pytest.raises(SparsetrainError, match="data.path"):
        run_in_process({"data": {"source": "table", "path": str(path), "target": "label"}})
    assert_nothing_recorded(project)


@pytest.mark.parametrize(
    "params, named",
    [
        ({"data": {"source": "fashion_mnist", "path": "/nonexistent"}}, "data.path"),
        ({"data": {"source": "imagenet"}}, "data.source"),
        ({"compression": {"method": "tsne", "n_components": 2}}, "compression.method"),
        ({"sparsity": {"penalty": "l7"}}, "sparsity.penalty"),
        ({"sparsity": {"strength": -0.5}}, "sparsity.strength"),
        ({"compression": {"method": "pca", "n_components": 100}}, "compression.n_components"),
        ({"data": {"test_size": 0.6, "val_size": 0.4}}, "data.test_size"),
    ],
)
def test_bad_parameters_fail_before_training(project, params, named):
    with pytest.raises(SparsetrainError) as error:
        run_in_process(params)
    assert named in str(error.value) and "\n" not in str(error.value)
    assert_nothing_recorded(project)


def assert_nothing_recorded(project: Path) -> None:
    assert len(finished_runs()) == 0
    assert registered_versions() == []
    assert not (project / "data" / "06_models" / "network.pkl").exists()
