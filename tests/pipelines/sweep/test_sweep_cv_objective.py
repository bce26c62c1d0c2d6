"""A sweep that optimizes a cross-validated metric (issue 12, part 1): each trial is the whole
recipe cross-validated over evaluation.cv_folds folds of train + validation, scored by the mean.
Real digits, real Optuna storage, real MLflow SQLite store."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient

from sparsetrain.config import parse_config, parse_sweep_section, unflatten
from sparsetrain.core.data import Dataset
from sparsetrain.pipelines.sweep.nodes import run_sweep
from sparsetrain.pipelines.sweep.trial import refit_best
from sparsetrain.recipe import cross_validate

BASE = {
    "compression": {"method": "none"},
    "model": {"kind": "linear"},
    "training": {"epochs": 2, "early_stopping": None, "verbose": False},
    "evaluation": {"cv_folds": 2},
}


def test_trials_are_scored_by_the_mean_over_folds(tmp_path, splits, dataset_info, tracking):
    base = parse_config(BASE)
    sweep = parse_sweep_section(
        {
            "study_name": "cv", "storage": f"sqlite:///{tmp_path / 'optuna.db'}", "sampler": "random",
            "n_trials": 2, "heartbeat_s": 1, "objective": "cv_val_accuracy",
            "space": {"sparsity.penalty": ["l1", "l0"]},
        }
    )
    table, summary = run_sweep(splits, splits, dataset_info, base, sweep)

    assert list(table["state"]) == ["COMPLETE"] * 2
    runs = MlflowClient().search_runs(
        [tracking.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{tracking.info.run_id}'"
    )
    assert len(runs) == 2
    for run in runs:
        metrics = run.data.metrics
        assert {"cv_val_accuracy", "cv_val_accuracy_std", "cv_val_accuracy_ci95_low", "cv_val_f1_macro",
                "density", "density.layer0"} <= set(metrics)
        assert metrics["cv_folds_run"] == 2
        low, high = metrics["cv_val_accuracy_ci95_low"], metrics["cv_val_accuracy_ci95_high"]
        assert low <= metrics["cv_val_accuracy"] <= high
        assert not [m for m in metrics if m.startswith(("test_", "val_"))], "scored on held-out folds only"
        assert run.data.tags["sweep_objective"] == "cv_val_accuracy"
    best = summary["best"]
    assert best["value"] == pytest.approx(table["cv_val_accuracy"].max())

    # the objective is the mean over the folds of the whole recipe on train + validation
    cfg = parse_config(unflatten(best["config"]))
    rows = Dataset(
        np.concatenate([splits.X_train, splits.X_val]), np.concatenate([splits.y_train, splits.y_val]),
        dataset_info.feature_names, "classification",
    )
    folds = cross_validate(rows, cfg, dataset_info)
    assert best["value"] == pytest.approx(np.mean([f.metrics["val_accuracy"] for f in folds]))
    assert best["metrics"]["density"] == pytest.approx(np.mean([f.metrics["density"] for f in folds]))

    # the best trial is refit as any other: train + validation, for the epochs it trained
    network, _, refit, history = refit_best(summary, splits, splits, None, dataset_info, base)
    assert history.epochs_run == best["refit_epochs"] == 2
    assert len(refit.X_train) == len(splits.X_train) + len(splits.X_val)
    assert network is not None
