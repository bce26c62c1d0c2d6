"""The default pipeline's data slice (ingestion -> compression -> training -> evaluation) on an
in-memory catalog: real digits, real training, no MLflow."""

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from sparsetrain.config import parse_config
from sparsetrain.errors import SparsetrainError
from sparsetrain.hooks import config_inputs
from sparsetrain.pipelines import compression, evaluation, ingestion, training


def params(epochs=20, **sections):
    """The typed config the project hook would hand the nodes, trained ``epochs`` quietly."""
    sections.setdefault("training", {})
    sections["training"] = {"epochs": epochs, "verbose": False, **sections["training"]}
    return parse_config(sections)


class KeptDataset(MemoryDataset):
    """A memory dataset the runner cannot release, so that tests can read intermediate outputs."""

    def _release(self) -> None:
        pass


def run_slice(cfg, pipeline, outputs):
    catalog = DataCatalog({"raw_table": MemoryDataset(None), "raw_batches": MemoryDataset({}), **{name: KeptDataset() for name in outputs}})
    for name, value in config_inputs(cfg, None).items():
        catalog[name] = value
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in outputs}


DATA_SLICE = ingestion.create_pipeline() + compression.create_pipeline() + training.create_pipeline()


def test_default_slice_trains_a_sparse_accurate_model():
    pipeline = DATA_SLICE + evaluation.create_pipeline().only_nodes("evaluate_model", "list_selected_features")
    out = run_slice(params(), pipeline, ["evaluation_metrics", "selected_features"])
    metrics = out["evaluation_metrics"]
    assert metrics["test_accuracy"] >= 0.9
    assert metrics["density"] < 1.0
    for name in ("test_f1_macro", "val_accuracy", "nonzero_params", "total_params", "bytes_dense",
                 "bytes_sparse", "train_seconds", "latency_ms_p50", "throughput_per_s"):
        assert name in metrics
    assert 0 < len(out["selected_features"]) <= 64


def test_standardizer_is_fitted_on_the_training_split_only():
    out = run_slice(params(), ingestion.create_pipeline(), ["standardized_splits", "standardizer", "raw_splits"])
    splits, raw = out["standardized_splits"], out["raw_splits"]
    assert abs(splits.X_train.mean(axis=0)).max() < 1e-4
    assert (out["standardizer"].mean_ == raw.X_train.mean(axis=0)).all()


def test_compression_is_fitted_on_train_and_logged():
    cfg = params(compression={"method": "pca", "n_components": 20})
    pipeline = ingestion.create_pipeline() + compression.create_pipeline()
    out = run_slice(cfg, pipeline, ["model_input", "compression_summary"])
    assert out["model_input"].X_train.shape[1] == 20
    assert out["model_input"].X_test.shape[1] == 20
    assert 0 < out["compression_summary"]["explained_variance_ratio"] < 1
    assert out["compression_summary"]["n_components"] == 20


def test_synthetic_regression_scores_feature_selection():
    cfg = params(epochs=40, data={"source": "synthetic", "task": "regression", "n_features": 30, "n_informative": 5},
                 sparsity={"strength": 0.05})
    pipeline = DATA_SLICE + evaluation.create_pipeline().only_nodes(
        "evaluate_model", "list_selected_features", "score_feature_selection")
    out = run_slice(cfg, pipeline, ["evaluation_metrics", "feature_selection_metrics"])
    assert out["evaluation_metrics"]["test_r2"] > 0.9
    assert out["feature_selection_metrics"]["selection_recall"] == 1.0
    assert out["feature_selection_metrics"]["selection_precision"] > 0.5


def test_more_components_than_features_fails_before_training():
    cfg = params(compression={"method": "pca", "n_components": 65})
    with pytest.raises(SparsetrainError, match="compression.n_components"):
        run_slice(cfg, DATA_SLICE, ["network"])
