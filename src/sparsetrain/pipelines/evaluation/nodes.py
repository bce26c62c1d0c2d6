"""Evaluation on the test split (never seen in training): task metrics, sparsity, size, speed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix
from torch import nn

from sparsetrain.core.data import Splits
from sparsetrain.core.export import to_bytes, to_sparse_inference
from sparsetrain.core.metrics import selected_features, sparsity_metrics, speed_metrics, task_metrics
from sparsetrain.core.models import prunable_weights
from sparsetrain.reporting import confusion_matrix_figure, training_curves_figure, weight_mask_figure


def predict(network: nn.Module, X: np.ndarray, task: str) -> np.ndarray:
    network = network.to("cpu").eval()
    with torch.inference_mode():
        out = network(torch.as_tensor(X, dtype=torch.float32))
    return out.argmax(dim=1).numpy() if task == "classification" else out.squeeze(-1).numpy()


def evaluate_model(
    network: nn.Module, model_input: Splits, dataset_info: dict[str, Any], training_history: dict[str, Any]
) -> dict[str, float]:
    """Every scalar metric of design.md, computed once; the names are the MLflow metric names."""
    task = dataset_info["task"]
    metrics: dict[str, float] = {}
    metrics.update(task_metrics(task, model_input.y_test, predict(network, model_input.X_test, task), "test"))
    if len(model_input.X_val):
        metrics.update(task_metrics(task, model_input.y_val, predict(network, model_input.X_val, task), "val"))
    metrics.update(sparsity_metrics(network))
    metrics["bytes_sparse"] = float(len(to_bytes(network)))
    metrics["train_seconds"] = float(training_history["train_seconds"])
    metrics["epochs_run"] = float(training_history["epochs_run"])
    metrics.update(speed_metrics(network, model_input.X_test))
    metrics.update(speed_metrics(to_sparse_inference(network), model_input.X_test, suffix="_sparse"))
    return metrics


def metrics_for_mlflow(metrics: dict[str, float], training_history: dict[str, Any]) -> dict[str, Any]:
    """Scalars at step 0, plus the per-epoch curves as metric histories."""
    logged: dict[str, Any] = {name: {"value": value, "step": 0} for name, value in metrics.items()}
    for curve in ("train_loss", "val_loss", "density"):
        values = training_history[curve]
        if values:
            name = "density_history" if curve == "density" else curve
            logged[name] = [{"value": float(v), "step": i} for i, v in enumerate(values)]
    return logged


def plot_evaluation(
    network: nn.Module,
    model_input: Splits,
    dataset_info: dict[str, Any],
    training_history: dict[str, Any],
    compression_summary: dict[str, Any],
) -> dict[str, Figure]:
    """The run's figures by file name: training curves always, the confusion matrix for
    classifiers, the weight mask for image data read directly by a fully connected layer."""
    figures = {
        "training_curves.png": training_curves_figure(
            training_history["train_loss"], training_history["val_loss"], training_history["density"]
        )
    }
    if dataset_info["task"] == "classification":
        n_classes = dataset_info["n_classes"]
        names = dataset_info["class_names"] or [str(i) for i in range(n_classes)]
        predicted = predict(network, model_input.X_test, "classification")
        matrix = confusion_matrix(model_input.y_test, predicted, labels=list(range(n_classes)))
        figures["confusion_matrix.png"] = confusion_matrix_figure(matrix, names)
    first = prunable_weights(network)[0].detach().cpu().numpy()
    image_shape = dataset_info["image_shape"]
    if (
        image_shape is not None
        and compression_summary["method"] == "none"
        and first.ndim == 2
        and first.shape[1] == int(np.prod(image_shape))
    ):
        figures["weight_mask.png"] = weight_mask_figure(first, image_shape)
    return figures


def list_selected_features(network: nn.Module, dataset_info: dict[str, Any], compression_summary: dict[str, Any]) -> pd.DataFrame:
    """Input features with a nonzero weight in any unit of the first layer. With compression,
    the inputs are components, named ``component_i``."""
    if compression_summary["method"] == "none":
        names = dataset_info["feature_names"]
    else:
        names = [f"component_{i}" for i in range(int(compression_summary["n_components"]))]
    rows = selected_features(network, names)
    informative = set(dataset_info.get("informative") or [])
    frame = pd.DataFrame(rows, columns=["feature", "index", "weight_l1"])
    if informative and compression_summary["method"] == "none":
        frame["informative"] = frame["index"].isin(informative)
    return frame


def score_feature_selection(selected: pd.DataFrame, dataset_info: dict[str, Any]) -> dict[str, Any]:
    """Where the truly informative features are known (synthetic data): precision and recall
    of the selected set, as MLflow metrics; otherwise only the count."""
    metrics = {"selected_features": {"value": float(len(selected)), "step": 0}}
    informative = set(dataset_info.get("informative") or [])
    if informative and "informative" in selected:
        hits = int(selected["informative"].sum())
        metrics["selection_precision"] = {"value": hits / max(len(selected), 1), "step": 0}
        metrics["selection_recall"] = {"value": hits / len(informative), "step": 0}
    return metrics
