"""Scoring a trained network: task metrics, sparsity, stored size, speed, and the run's figures.

One place shared by `kedro run` (the evaluation pipeline), a sweep trial and its refit, so that
a trial's ``val_accuracy`` and a run's are the same computation. No Kedro, no MLflow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from sparsetrain.core.data import DatasetInfo, Splits
from sparsetrain.core.export import from_bytes, to_bytes, to_sparse_inference
from sparsetrain.core.metrics import (
    layer_metrics,
    primary_metric,
    selected_features,
    sparsity_metrics,
    speed_metrics,
    task_metrics,
)
from sparsetrain.core.selection import f1_of
from sparsetrain.core.training import History


def predict(network: nn.Module, X: np.ndarray, task: str) -> np.ndarray:
    network = network.to("cpu").eval()
    with torch.inference_mode():
        out = network(torch.as_tensor(X, dtype=torch.float32))
    return out.argmax(dim=1).numpy() if task == "classification" else out.squeeze(-1).numpy()


def chance_accuracy(y: np.ndarray) -> float:
    """The accuracy of always answering the most frequent class: what a model must beat."""
    return float(np.bincount(np.asarray(y, dtype=np.int64)).max() / len(y)) if len(y) else 0.0


def evaluate_network(
    network: nn.Module, splits: Splits, info: DatasetInfo, history: History, speed: bool = True
) -> dict[str, float]:
    """Every scalar metric of design.md, computed once; the names are the MLflow metric names,
    per-layer ones included (``density.<layer>``, ``nonzeros.<layer>``, :func:`layer_metrics`).
    ``speed=False`` skips the latency timings (a sweep trial does not need them)."""
    task = info.task
    metrics: dict[str, float] = {}
    metrics.update(task_metrics(task, splits.y_test, predict(network, splits.X_test, task), "test"))
    if len(splits.X_val):
        metrics.update(task_metrics(task, splits.y_val, predict(network, splits.X_val, task), "val"))
    if task == "classification":
        metrics["test_chance_accuracy"] = chance_accuracy(splits.y_test)
    metrics.update(sparsity_metrics(network))
    metrics.update(layer_metrics(network))  # density.layer0, nonzeros.layer0, ...
    metrics["bytes_sparse"] = float(len(to_bytes(network)))
    metrics["train_seconds"] = float(history.seconds)
    metrics["epochs_run"] = float(history.epochs_run)
    if speed:
        metrics.update(speed_metrics(network, splits.X_test))
        metrics.update(speed_metrics(to_sparse_inference(network), splits.X_test, suffix="_sparse"))
    return metrics


def quantized_metrics(
    network: nn.Module, splits: Splits, info: DatasetInfo, quantize: str
) -> dict[str, float]:
    """With ``export.quantize`` fp16 / int8: the quantized file's size (``bytes_quantized``) and the
    test metric of the network decoded from it (``test_accuracy_quantized`` / ``test_r2_quantized``),
    i.e. what the registered model, which serves that file, scores. ``none``: ``{}``."""
    if quantize == "none":
        return {}
    data = to_bytes(network, quantize=quantize)
    metric = primary_metric(info.task, "test")
    predicted = predict(from_bytes(data), splits.X_test, info.task)
    score = task_metrics(info.task, splits.y_test, predicted, "test")[metric]
    return {"bytes_quantized": float(len(data)), f"{metric}_quantized": float(score)}


def degenerate_reason(metrics: dict[str, float], task: str) -> str | None:
    """Why a model is not worth registering (every weight zero, or no better than chance), or None."""
    if metrics["density"] == 0:
        return (
            "every prunable weight is zero (density 0): lower sparsity.strength or raise "
            "sparsity.target_density"
        )
    if task == "classification" and metrics["test_accuracy"] <= metrics["test_chance_accuracy"]:
        return (
            f"test_accuracy {metrics['test_accuracy']:.4f} is no better than always predicting the most "
            f"frequent class ({metrics['test_chance_accuracy']:.4f}): lower sparsity.strength or train longer"
        )
    if task == "regression" and metrics["test_r2"] <= 0:
        return (
            f"test_r2 {metrics['test_r2']:.4f} <= 0 is no better than predicting the mean: "
            "lower sparsity.strength"
        )
    return None


def feature_table(network: nn.Module, info: DatasetInfo, n_components: int | None) -> pd.DataFrame:
    """Input features with a nonzero weight in any unit of the first layer. With compression
    (``n_components`` set) the inputs are components, named ``component_i``."""
    names = info.feature_names if n_components is None else [f"component_{i}" for i in range(n_components)]
    frame = pd.DataFrame(selected_features(network, names), columns=["feature", "index", "weight_l1"])
    if info.informative and n_components is None:
        frame["informative"] = frame["index"].isin(set(info.informative))
    return frame


def selection_scores(selected: pd.DataFrame, info: DatasetInfo) -> dict[str, float]:
    """Where the truly informative features are known (synthetic data): precision, recall and F1
    of the selected set; otherwise only the count."""
    scores = {"selected_features": float(len(selected))}
    if info.informative and "informative" in selected:
        hits = int(selected["informative"].sum())
        scores["selection_precision"] = hits / max(len(selected), 1)
        scores["selection_recall"] = hits / len(info.informative)
        scores["selection_f1"] = f1_of(scores["selection_precision"], scores["selection_recall"])
    return scores
