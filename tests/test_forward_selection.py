"""``sparsity.selection: forward`` through the recipe and through ``kedro run``: the network is the
usual linear one, trained by the run's own recipe on the selected columns, exact zeros elsewhere,
reported like L1 (selected_features.csv, selection_precision / selection_recall)."""

from __future__ import annotations

import logging

import mlflow
import pandas as pd
import pytest
import torch
from kedro_project import kedro_run
from mlflow import MlflowClient
from test_run_integrity import one_line_error

from sparsetrain.config import ModelConfig, SparsityConfig, TrainingConfig
from sparsetrain.core.data import DatasetInfo, Splits, Standardizer, make_synthetic, split_dataset
from sparsetrain.core.models import prunable_weights
from sparsetrain.scoring import evaluate_network, feature_table, selection_scores

K = 5  # informative features of the synthetic source in these tests (of 50)


def synthetic(task: str) -> tuple[Splits, DatasetInfo]:
    """The synthetic source as the ingestion pipeline makes it (seed 42, standardized splits)."""
    ds = make_synthetic(task, 2000, 50, K, 3, 42)
    raw = split_dataset(ds, 0.1, 0.2, 42)
    scale = Standardizer().fit(raw.X_train).transform
    splits = Splits(
        scale(raw.X_train), raw.y_train, scale(raw.X_val), raw.y_val, scale(raw.X_test), raw.y_test
    )
    return splits, DatasetInfo.of(ds)


def train(task: str, epochs: int = 10, **sparsity):
    from sparsetrain.recipe import train_network

    splits, info = synthetic(task)
    network, history = train_network(
        splits, info, ModelConfig(kind="linear"), SparsityConfig(selection="forward", **sparsity),
        TrainingConfig(epochs=epochs, device="cpu", verbose=False),
    )
    return network, history, splits, info


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_recipe_selects_the_informative_features_with_exact_zeros_elsewhere(task):
    epochs = 10 if task == "classification" else 40  # Adam on least squares: slower to converge
    network, history, splits, info = train(task, epochs=epochs, max_features=K)
    (W,) = prunable_weights(network)
    assert W.shape == (info.n_outputs, 50)  # the usual linear network, full input width
    kept = (W != 0).any(0)
    assert int(kept.sum()) == K and bool((W[:, ~kept] == 0).all())
    scores = selection_scores(feature_table(network, info, None), info)
    assert scores["selected_features"] == K
    assert scores["selection_precision"] == scores["selection_recall"] == 1.0
    metrics = evaluate_network(network, splits, info, history, speed=False)
    # the history's density is the full network's, not the narrow refit's
    assert history.density[history.best_epoch] == pytest.approx(metrics["density"]) == pytest.approx(K / 50)
    if task == "classification":  # 3 classes; these clusters are far from linearly separable
        assert metrics["test_accuracy"] > 0.55
    else:
        assert metrics["test_r2"] > 0.9


def test_the_recipe_is_deterministic_under_the_seed():
    first, *_ = train("classification", max_features=4)
    second, *_ = train("classification", max_features=4)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_the_recipe_logs_one_line_per_step(caplog):
    from sparsetrain.recipe import train_network

    splits, info = synthetic("regression")
    with caplog.at_level(logging.INFO, logger="sparsetrain.core.selection"):
        train_network(
            splits, info, ModelConfig(kind="linear"), SparsityConfig(selection="forward", max_features=3),
            TrainingConfig(epochs=2, device="cpu"), callbacks=[],
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "sparsetrain.core.selection"]
    assert len(lines) == 3 and lines[2].startswith("forward selection 3/3: + x")


@pytest.mark.slow
def test_kedro_run_with_forward_selection_reports_like_l1(project):
    result = kedro_run(
        project,
        f"data.source=synthetic,data.n_informative={K},sparsity.selection=forward,sparsity.max_features={K},"
        "training.epochs=15",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"forward selection 1/{K}: + x" in output and f"forward selection {K}/{K}: + x" in output
    (run,) = MlflowClient().search_runs([mlflow.get_experiment_by_name("sparsetrain").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["sparsity.selection"] == "forward"
    metrics = run.data.metrics
    assert metrics["selected_features"] == K
    assert metrics["selection_precision"] == 1.0 and metrics["selection_recall"] == 1.0
    assert metrics["test_accuracy"] > 0.55
    densities = [m.value for m in MlflowClient().get_metric_history(run.info.run_id, "density")]
    assert len(densities) > 1 and max(densities) <= K / 50 + 1e-9  # per epoch, at full width
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="selected_features.csv")
    table = pd.read_csv(path)
    assert len(table) == K and bool(table["informative"].all())


@pytest.mark.slow
def test_kedro_run_with_more_features_than_columns_is_one_line(project):
    result = kedro_run(project, "data.source=synthetic,sparsity.selection=forward,sparsity.max_features=60")
    one_line_error(result, "sparsity.max_features=60", "50 input features")
    assert "forward selection" not in result.stdout + result.stderr
