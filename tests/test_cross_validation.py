"""Cross-validation of the whole recipe (issue 12, part 1): folds never see their held-out part,
the metric names, one nested MLflow run per fold, and `kedro run` with evaluation.cv_folds.

Real digits (raw pixels, as ingestion hands them over), real training (a few epochs), a real
MLflow SQLite store; no mocks."""

from __future__ import annotations

import dataclasses
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
from kedro_project import kedro_run
from mlflow import MlflowClient

from sparsetrain.config import parse_config
from sparsetrain.core.data import DatasetInfo, load_digits_dataset, make_synthetic, split_dataset
from sparsetrain.errors import SparsetrainError
from sparsetrain.pipelines.evaluation.nodes import cross_validate_recipe
from sparsetrain.recipe import cross_validate, cv_metrics, cv_plan, cv_table, fit_fold

FAST = {"epochs": 3, "verbose": False}
SUMMARY_PARTS = ("mean", "std", "ci95_low", "ci95_high")


def config(folds=3, repeats=1, training=None, **sections):
    return parse_config(
        {
            "training": {**FAST, **(training or {})},
            "evaluation": {"cv_folds": folds, "cv_repeats": repeats},
            **sections,
        }
    )


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="module")
def raw_splits(digits):
    """The raw (unstandardized) splits ingestion makes with the default data section."""
    return split_dataset(digits, val_size=0.1, test_size=0.2, seed=42)


def _stats(X):
    """What core.data.Standardizer computes: float64 mean / std, cast to float32, std 0 -> 1."""
    X = np.asarray(X, dtype=np.float64)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    return X.mean(axis=0).astype(np.float32), scale.astype(np.float32)


# ------------------------------------------------------------------------------- no leak


def test_folds_never_see_their_held_out_part(digits):
    """Fit on each fold: the standardizer's statistics are those of the fold's fit rows only,
    not of its held-out part, not of all rows; and the three parts of a fold are disjoint and
    cover every row, the held-out parts of a repeat cover every row once."""
    cfg = config(folds=3, training={"epochs": 1})
    seen = []

    def check(result, fit):
        fold = result.fold
        fit_rows, stop, held = fold.fit_rows, fold.stop_rows, fold.held_out_rows
        assert not set(fit_rows) & set(held) and not set(stop) & set(held) and not set(fit_rows) & set(stop)
        assert sorted(np.concatenate([fit_rows, stop, held])) == list(range(len(digits.y)))
        mean, scale = _stats(digits.X[fit_rows])
        assert np.array_equal(fit.standardizer.mean_, mean) and np.array_equal(fit.standardizer.scale_, scale)
        for other in (digits.X[held], digits.X, digits.X[np.concatenate([fit_rows, stop])]):
            assert not np.allclose(fit.standardizer.mean_, _stats(other)[0])
        # the model saw standardized fit rows: mean 0 there, not on the held-out part
        assert np.abs(fit.splits.X_train.mean(axis=0)).max() < 1e-4
        assert np.abs(fit.splits.X_test.mean(axis=0)).max() > 1e-2
        assert len(fit.splits.X_test) == len(held) and len(fit.splits.X_val) == len(stop)
        seen.append(held)

    results = cross_validate(digits, cfg, on_fold=check)
    assert len(results) == 3 == len(seen)
    assert sorted(np.concatenate(seen)) == list(range(len(digits.y)))


def test_a_fold_fit_does_not_depend_on_its_held_out_rows(digits):
    """Replace a fold's held-out rows by garbage: standardizer, reducer (PCA) and the trained
    weights are bit for bit the same; only the held-out scores change."""
    cfg = config(folds=3, compression={"method": "pca", "n_components": 16})
    fold = cv_plan(digits, cfg)[1]
    X = digits.X.copy()
    X[fold.held_out_rows] = np.random.default_rng(0).uniform(-1e3, 1e3, X[fold.held_out_rows].shape)
    poisoned = dataclasses.replace(digits, X=X.astype(np.float32))
    info = DatasetInfo.of(digits)
    clean, dirty = fit_fold(digits, fold, cfg, info), fit_fold(poisoned, fold, cfg, info)
    assert np.array_equal(clean.standardizer.mean_, dirty.standardizer.mean_)
    assert np.array_equal(clean.standardizer.scale_, dirty.standardizer.scale_)
    assert np.array_equal(clean.reducer.components_, dirty.reducer.components_)
    for a, b in zip(clean.network.state_dict().values(), dirty.network.state_dict().values(), strict=True):
        assert a.equal(b)
    assert not np.allclose(clean.splits.X_test, dirty.splits.X_test)


def test_plan_is_stratified_seeded_and_splits_off_an_early_stopping_part(digits):
    cfg = config(folds=4, repeats=2)
    plan = cv_plan(digits, cfg)
    assert [(f.repeat, f.fold) for f in plan] == [(r, k) for r in (1, 2) for k in (1, 2, 3, 4)]
    shares = np.bincount(digits.y) / len(digits.y)
    for fold in plan:
        held = np.bincount(digits.y[fold.held_out_rows], minlength=10) / len(fold.held_out_rows)
        assert np.abs(held - shares).max() < 0.01  # stratified
        train = len(fold.fit_rows) + len(fold.stop_rows)
        # data.val_size's share of train + validation rows in a run: 0.1 / (1 - 0.2)
        assert len(fold.stop_rows) / train == pytest.approx(0.1 / 0.8, abs=0.01)
    assert plan[0].label == "fold 1/4 of repeat 1/2"
    assert not np.array_equal(plan[0].held_out_rows, plan[4].held_out_rows)  # reshuffled per repeat
    again = cv_plan(digits, cfg)
    assert all(np.array_equal(a.held_out_rows, b.held_out_rows) for a, b in zip(plan, again, strict=True))
    moved = cv_plan(digits, config(folds=4, repeats=2, data={"seed": 7}))
    assert not np.array_equal(plan[0].held_out_rows, moved[0].held_out_rows)  # seeded by data.seed
    no_stop = cv_plan(digits, config(folds=4, data={"val_size": 0.0}))
    assert all(len(f.stop_rows) == 0 for f in no_stop)


def test_cross_validation_needs_two_folds(digits):
    with pytest.raises(SparsetrainError, match=r"^evaluation\.cv_folds=0: .*at least 2 folds"):
        cross_validate(digits, config(folds=0))
    with pytest.raises(SparsetrainError, match="evaluation.cv_folds"):
        parse_config({"evaluation": {"cv_folds": 1}})


# ------------------------------------------------------------------------------- names


def test_metric_names_classification(digits):
    results = cross_validate(digits, config(folds=2, repeats=2, training={"epochs": 2}))
    assert len(results) == 4
    for r in results:
        assert {"val_accuracy", "val_f1_macro", "density", "density.layer0"} <= set(r.metrics)
        assert "nonzero_params" in r.metrics and not [k for k in r.metrics if k.startswith("test_")]
    metrics = cv_metrics(results)
    assert metrics["cv_folds_run"] == 4
    for name in ("val_accuracy", "val_f1_macro", "val_precision_macro", "val_recall_macro", "density",
                 "nonzero_params"):
        assert {f"cv_{name}_{part}" for part in SUMMARY_PARTS} <= set(metrics)
    accuracies = [r.metrics["val_accuracy"] for r in results]
    assert metrics["cv_val_accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert metrics["cv_val_accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1))
    low, mean, high = (metrics[f"cv_val_accuracy_{part}"] for part in ("ci95_low", "mean", "ci95_high"))
    assert low < mean < high and 0.8 < mean <= 1.0
    table = pd.DataFrame(cv_table(results))
    assert list(zip(table["repeat"], table["fold"])) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert (table["n_fit"] + table["n_early_stopping"] + table["n_held_out"] == len(digits.y)).all()


def test_metric_names_regression():
    shape = {"n_samples": 300, "n_features": 10, "n_informative": 3}
    cfg = config(folds=3, data={"source": "synthetic", "task": "regression", **shape}, training={"epochs": 5})
    dataset = make_synthetic("regression", **shape, n_classes=2, seed=42)
    metrics = cv_metrics(cross_validate(dataset, cfg))
    assert {f"cv_{m}_{p}" for m in ("val_r2", "val_rmse", "density") for p in SUMMARY_PARTS} <= set(metrics)
    assert not [k for k in metrics if "accuracy" in k]


# ------------------------------------------------------------------------------- the node


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An MLflow SQLite store with its tables made once (MLflow's migrations take seconds)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def parent_run(tmp_path, monkeypatch, empty_store):
    """A fresh store with an active run, as kedro-mlflow leaves it for the node; the working
    folder is tmp_path (the run folder is data/08_reporting/runs/<run id>/ under it)."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("cv-test")
    with mlflow.start_run(run_name="parent") as run:
        yield run
    mlflow.set_tracking_uri(None)


def _node(raw_splits, digits, cfg):
    return cross_validate_recipe(
        raw_splits, DatasetInfo.of(digits), cfg.data, cfg.compression, cfg.model, cfg.sparsity, cfg.training,
        cfg.evaluation,
    )


def _children(parent):
    return MlflowClient().search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )


def test_node_logs_one_nested_run_per_fold_and_repeat(raw_splits, digits, parent_run, tmp_path, caplog):
    caplog.set_level("INFO", logger="sparsetrain")
    metrics = _node(raw_splits, digits, config(folds=2, repeats=2, training={"epochs": 2}))

    runs = _children(parent_run)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted((r.data.tags["cv_repeat"], r.data.tags["cv_fold"]) for r in runs) == [
        ("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")
    ]
    for run in runs:
        expected = {"val_accuracy", "val_f1_macro", "density", "density.layer0", "nonzeros.layer0"}
        assert expected <= run.data.metrics.keys()
        assert run.data.params["evaluation.cv_folds"] == "2"
    n_cv_rows = len(raw_splits.y_train) + len(raw_splits.y_val)
    table = pd.read_csv(tmp_path / "data/08_reporting/runs" / parent_run.info.run_id / "cv" / "folds.csv")
    assert len(table) == 4
    assert (table["n_fit"] + table["n_early_stopping"] + table["n_held_out"] == n_cv_rows).all()
    by_fold = {(int(r.data.tags["cv_repeat"]), int(r.data.tags["cv_fold"])): r for r in runs}
    for row in table.itertuples():
        assert by_fold[(row.repeat, row.fold)].data.metrics["val_accuracy"] == pytest.approx(row.val_accuracy)
    assert metrics["cv_val_accuracy_mean"] == pytest.approx(table["val_accuracy"].mean())
    assert metrics["cv_folds_run"] == 4 and "cv_density_mean" in metrics
    fold_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cv fold")]
    assert len(fold_lines) == 4 and "fold 2/2 of repeat 2/2 [4/4]: val_accuracy=" in fold_lines[-1]


def test_node_does_nothing_with_cv_off(raw_splits, digits, parent_run, tmp_path):
    assert _node(raw_splits, digits, config(folds=0)) == {}
    assert _children(parent_run) == []
    assert not (tmp_path / "data/08_reporting/runs" / parent_run.info.run_id / "cv").exists()


# ------------------------------------------------------------------------------- kedro run


@pytest.mark.slow
def test_kedro_run_cross_validates_and_still_registers(project):
    result = kedro_run(project, "evaluation.cv_folds=3,training.epochs=3")
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "fold 3/3 [3/3]" in output
    assert not [line for line in output.splitlines() if "warning" in line.lower()], output[-2000:]
    client = MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and parent.info.status == "FINISHED"
    metrics = parent.data.metrics
    for name in ("val_accuracy", "val_f1_macro", "density"):
        assert {f"cv_{name}_{part}" for part in SUMMARY_PARTS} <= set(metrics)
    assert metrics["cv_folds_run"] == 3 and metrics["cv_val_accuracy_mean"] > 0.8
    assert {"density.layer0", "nonzeros.layer0"} <= set(metrics)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "cv")} == {"cv/folds.csv"}
    assert "plots/layer_density.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    (version,) = client.search_model_versions("name='sparsetrain-classifier'")
    assert version.run_id == parent.info.run_id
