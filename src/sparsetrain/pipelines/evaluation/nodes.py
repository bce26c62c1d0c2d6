"""Evaluation on the test split (never seen in training), and the run's report logged to MLflow.

Everything is handed over in memory and written only into this run's own folder
(:func:`sparsetrain.tracking.run_folder`), so that two runs in one project never mix files.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix
from torch import nn

from sparsetrain import tracking
from sparsetrain.core.data import DatasetInfo, Splits
from sparsetrain.core.models import prunable_weights
from sparsetrain.core.training import History
from sparsetrain.scoring import evaluate_network, feature_table, predict, selection_scores


def evaluate_model(network: nn.Module, model_input: Splits, dataset_info: DatasetInfo, training_history: History) -> dict[str, float]:
    return evaluate_network(network, model_input, dataset_info, training_history)


def _n_components(compression_summary: dict[str, Any]) -> int | None:
    """The number of components the model reads, or None when it reads the features themselves."""
    return None if compression_summary["method"] == "none" else int(compression_summary["n_components"])


def plot_evaluation(
    network: nn.Module, model_input: Splits, dataset_info: DatasetInfo, training_history: History
) -> dict[str, Figure]:
    """The run's figures by file name: training curves always, the confusion matrix for
    classifiers, the weight mask for image data read directly by a fully connected layer."""
    from sparsetrain.reporting import confusion_matrix_figure, training_curves_figure, weight_mask_figure

    history = training_history
    figures = {"training_curves.png": training_curves_figure(history.train_loss, history.val_loss, history.density)}
    if dataset_info.task == "classification":
        n_classes = dataset_info.n_classes
        names = dataset_info.class_names or [str(i) for i in range(n_classes)]
        predicted = predict(network, model_input.X_test, "classification")
        matrix = confusion_matrix(model_input.y_test, predicted, labels=list(range(n_classes)))
        figures["confusion_matrix.png"] = confusion_matrix_figure(matrix, names)
    first = prunable_weights(network)[0].detach().cpu().numpy()
    image_shape = dataset_info.image_shape_at(model_input.X_train.shape[1])
    if image_shape is not None and first.ndim == 2 and first.shape[1] == int(np.prod(image_shape)):
        figures["weight_mask.png"] = weight_mask_figure(first, image_shape)
    return figures


def list_selected_features(network: nn.Module, dataset_info: DatasetInfo, compression_summary: dict[str, Any]) -> pd.DataFrame:
    return feature_table(network, dataset_info, _n_components(compression_summary))


def score_feature_selection(selected_features: pd.DataFrame, dataset_info: DatasetInfo) -> dict[str, float]:
    return selection_scores(selected_features, dataset_info)


def report_run(
    evaluation_metrics: dict[str, float],
    feature_selection_metrics: dict[str, float],
    training_history: History,
    evaluation_plots: dict[str, Figure],
    selected_features: pd.DataFrame,
    compression_summary: dict[str, Any],
    dataset_info: DatasetInfo,
) -> dict[str, Any]:
    """Write the run's report into its own folder and log it: metrics (per-epoch curves as
    histories), density and test-metric tags, figures, tables. Returns where it went."""
    import matplotlib.pyplot as plt

    run_id = tracking.active_run_id()
    folder = tracking.run_folder(run_id)
    scalars = {**evaluation_metrics, **feature_selection_metrics}
    scalars["compression_n_components"] = float(compression_summary["n_components"])
    if "explained_variance_ratio" in compression_summary:
        scalars["explained_variance_ratio"] = compression_summary["explained_variance_ratio"]
    (folder / "plots").mkdir(exist_ok=True)
    for file_name, figure in evaluation_plots.items():
        figure.savefig(folder / "plots" / file_name, dpi=100)
        plt.close(figure)
    selected_features.to_csv(folder / "selected_features.csv", index=False)
    (folder / "compression_summary.json").write_text(json.dumps(compression_summary, indent=2, sort_keys=True))
    run_report = tracking.log_evaluation(run_id, scalars, training_history, dataset_info.task)
    tracking.log_folder(run_id, folder)
    return run_report
