"""The registered model serves the quantized export (``export.quantize``): published through
:func:`sparsetrain.tracking.publish_model` on a real SQLite store, loaded with pyfunc (no pickle),
its answers within the stated accuracy of the unquantized model."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from sparsetrain import tracking
from sparsetrain.config import parse_config
from sparsetrain.core.data import Standardizer, load_digits_dataset, split_dataset
from sparsetrain.core.export import METADATA_KEY, _metadata
from sparsetrain.core.models import build_model
from sparsetrain.core.penalties import make_penalty
from sparsetrain.core.sparsity.pruner import make_pruner
from sparsetrain.core.training import TrainSettings, fit
from sparsetrain.serving import build_predictor, input_example


@pytest.fixture(scope="module")
def trained():
    """A digits MLP pruned to 10% by gmp, as the pipeline trains it, in a few seconds."""
    dataset = load_digits_dataset()
    splits = split_dataset(dataset, val_size=0.1, test_size=0.2, seed=0)
    scaler = Standardizer().fit(splits.X_train)
    torch.manual_seed(0)
    network = build_model("mlp", splits.X_train.shape[1], 10, hidden=(300, 100))
    X_train, X_val = scaler.transform(splits.X_train), scaler.transform(splits.X_val)
    settings = TrainSettings(epochs=4, batch_size=64, early_stopping=None, device="cpu")
    network, _ = fit(
        network, X_train, splits.y_train, X_val, splits.y_val, task="classification", settings=settings,
        penalty=make_penalty("none", 0.0), pruner=make_pruner("gmp", target_density=0.1),
    )
    return build_predictor(scaler, None, network, dataset), dataset, splits


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "RUNS_FOLDER", tmp_path / "runs")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("q", artifact_location=str(tmp_path / "art"))
    mlflow.set_experiment(experiment_id=experiment)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def publish(trained, quantize):
    predictor, dataset, _ = trained
    cfg = parse_config({"model": {"kind": "mlp"}, "export": {"quantize": quantize}})
    metrics = {"density": 0.1, "test_accuracy": 0.9, "test_chance_accuracy": 0.1}
    with mlflow.start_run() as run:
        folder = str(tracking.run_folder(run.info.run_id))
        report = {"run_id": run.info.run_id, "metrics": metrics, "folder": folder}
        published = tracking.publish_model(
            report, predictor, input_example(dataset), "classification", cfg.registry, config=cfg
        )
    return f"models:/{published['name']}/{published['version']}"


@pytest.mark.parametrize("quantize, agree", [("fp16", 1.0), ("int8", 0.99)])
def test_a_quantized_registered_model_loads_without_pickle_and_predicts_as_the_unquantized_one(
    store, trained, quantize, agree
):
    predictor, _, splits = trained
    rows = splits.X_test.astype(np.float64)
    uri = publish(trained, quantize)
    folder = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(store / "download")))
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle")]
    weights = (folder / "artifacts" / "model.sparse.safetensors").read_bytes()
    header = json.loads(_metadata(weights)[METADATA_KEY])
    assert header["quantize"] == quantize
    served = np.asarray(mlflow.pyfunc.load_model(uri).predict(rows))
    want = predictor.predict(rows)
    assert np.mean(served == want) >= agree
    assert abs(np.mean(served == splits.y_test) - np.mean(want == splits.y_test)) <= 0.01
