"""Evaluation on the test split (never seen in training), cross-validation of the whole recipe
(``evaluation.cv_folds``), and the run's report logged to MLflow.

Everything is handed over in memory and written only into this run's own folder
(:func:`sparsetrain.tracking.run_folder`), so that two runs in one project never mix files.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix
from torch import nn

from sparsetrain import tracking
from sparsetrain.config import (
    CompressionConfig,
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    SparsetrainConfig,
    SparsityConfig,
    TrainingConfig,
)
from sparsetrain.core.data import Dataset, DatasetInfo, Splits
from sparsetrain.core.metrics import layer_sparsity, primary_metric
from sparsetrain.core.models import prunable_weights
from sparsetrain.core.training import History
from sparsetrain.recipe import FoldFit, FoldResult, cross_validate, cv_metrics, cv_table
from sparsetrain.scoring import evaluate_network, feature_table, predict, quantized_metrics, selection_scores

logger = logging.getLogger(__name__)
CV_FOLDER = "cv"  # under the run's folder and its artifacts: cv/folds.csv


def evaluate_model(
    network: nn.Module, model_input: Splits, dataset_info: DatasetInfo, training_history: History, export: Any
) -> dict[str, float]:
    metrics = evaluate_network(network, model_input, dataset_info, training_history)
    return {**metrics, **quantized_metrics(network, model_input, dataset_info, export.quantize)}


def _n_components(compression_summary: dict[str, Any]) -> int | None:
    """The number of components the model reads, or None when it reads the features themselves."""
    return None if compression_summary["method"] == "none" else int(compression_summary["n_components"])


def plot_evaluation(
    network: nn.Module, model_input: Splits, dataset_info: DatasetInfo, training_history: History
) -> dict[str, Figure]:
    """The run's figures by file name: training curves and the density of each prunable layer
    always, the confusion matrix for classifiers, the weight mask for image data read directly by
    a fully connected layer."""
    from sparsetrain.reporting import (
        confusion_matrix_figure,
        layer_density_figure,
        training_curves_figure,
        weight_mask_figure,
    )

    history = training_history
    figures = {
        "training_curves.png": training_curves_figure(history.train_loss, history.val_loss, history.density)
    }
    layers = layer_sparsity(network)
    figures["layer_density.png"] = layer_density_figure(
        [layer.name for layer in layers], [layer.kind for layer in layers],
        [layer.nonzeros for layer in layers], [layer.total for layer in layers],
    )
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


def list_selected_features(
    network: nn.Module, dataset_info: DatasetInfo, compression_summary: dict[str, Any]
) -> pd.DataFrame:
    return feature_table(network, dataset_info, _n_components(compression_summary))


def score_feature_selection(selected_features: pd.DataFrame, dataset_info: DatasetInfo) -> dict[str, float]:
    return selection_scores(selected_features, dataset_info)


def cross_validate_recipe(
    raw_splits: Splits,
    dataset_info: DatasetInfo,
    data: DataConfig,
    compression: CompressionConfig,
    model: ModelConfig,
    sparsity: SparsityConfig,
    training: TrainingConfig,
    evaluation: EvaluationConfig,
) -> dict[str, float]:
    """With ``evaluation.cv_folds`` >= 2: cross-validate the whole recipe on the rows that are not
    the test split (train + validation of the raw splits), each fold refitting standardizer,
    reducer and network on its training part (:func:`sparsetrain.recipe.cross_validate`). Each
    fold is a run nested under this one (tags ``cv_fold``, ``cv_repeat``, its held-out metrics);
    ``cv/folds.csv`` goes into this run's folder. Returns the ``cv_*`` metrics for the run's
    report (:func:`report_run` logs them and the folder). With ``cv_folds`` 0: nothing, ``{}``."""
    if evaluation.cv_folds < 2:
        return {}
    cfg = SparsetrainConfig(
        data=data, compression=compression, model=model, sparsity=sparsity, training=training,
        evaluation=evaluation,
    )
    info = dataset_info
    rows = Dataset(
        X=np.concatenate([raw_splits.X_train, raw_splits.X_val]),
        y=np.concatenate([raw_splits.y_train, raw_splits.y_val]),
        feature_names=info.feature_names, task=info.task, image_shape=info.image_shape,
        informative=info.informative, class_names=info.class_names, target=info.target,
    )
    run_id = tracking.active_run_id()
    name, params = tracking.run_name(cfg), cfg.flat()
    metric = primary_metric(dataset_info.task, "val")
    total = evaluation.cv_folds * evaluation.cv_repeats
    logger.info(
        "cross-validation: %d folds x %d repeats on %d rows (the test split left out)",
        evaluation.cv_folds, evaluation.cv_repeats, len(rows.y),
    )

    def track(result: FoldResult, fit: FoldFit) -> None:
        fold = result.fold
        suffix = f"-cv{fold.fold}" if fold.n_repeats == 1 else f"-cv{fold.fold}-repeat{fold.repeat}"
        tracking.log_nested_run(
            run_id, name + suffix, result.metrics,
            tags={"cv_fold": str(fold.fold), "cv_repeat": str(fold.repeat), "cv_role": "fold"}, params=params,
        )
        done = (fold.repeat - 1) * fold.n_folds + fold.fold
        logger.info(
            "cv %s [%d/%d]: %s=%.4f density=%.3f (fitted on %d rows, scored on %d held out)",
            fold.label, done, total, metric, result.metrics[metric], result.metrics["density"],
            len(fold.fit_rows), len(fold.held_out_rows),
        )

    results = cross_validate(rows, cfg, dataset_info, on_fold=track)
    folder = tracking.run_folder(run_id) / CV_FOLDER
    folder.mkdir(exist_ok=True)
    pd.DataFrame(cv_table(results)).to_csv(folder / "folds.csv", index=False)
    metrics = cv_metrics(results)
    logger.info(
        "cv: %s %.4f +- %.4f (95%% interval %.4f .. %.4f) over %d fits",
        metric, metrics[f"cv_{metric}_mean"], metrics[f"cv_{metric}_std"],
        metrics[f"cv_{metric}_ci95_low"], metrics[f"cv_{metric}_ci95_high"], len(results),
    )
    return metrics


def report_run(
    evaluation_metrics: dict[str, float],
    feature_selection_metrics: dict[str, float],
    cv_metrics: dict[str, float],
    training_history: History,
    evaluation_plots: dict[str, Figure],
    selected_features: pd.DataFrame,
    compression_summary: dict[str, Any],
    dataset_info: DatasetInfo,
) -> dict[str, Any]:
    """Write the run's report into its own folder and log it: metrics (per-epoch curves as
    histories; the ``cv_*`` of :func:`cross_validate_recipe`), density and test-metric tags,
    figures, tables (the whole folder, ``cv/folds.csv`` included). Returns where it went."""
    import matplotlib.pyplot as plt

    run_id = tracking.active_run_id()
    folder = tracking.run_folder(run_id)
    scalars = {**evaluation_metrics, **feature_selection_metrics, **cv_metrics}
    scalars["compression_n_components"] = float(compression_summary["n_components"])
    if "explained_variance_ratio" in compression_summary:
        scalars["explained_variance_ratio"] = compression_summary["explained_variance_ratio"]
    (folder / "plots").mkdir(exist_ok=True)
    for file_name, figure in evaluation_plots.items():
        figure.savefig(folder / "plots" / file_name, dpi=100)
        plt.close(figure)
    selected_features.to_csv(folder / "selected_features.csv", index=False)
    summary_text = json.dumps(compression_summary, indent=2, sort_keys=True)
    (folder / "compression_summary.json").write_text(summary_text)
    run_report = tracking.log_evaluation(run_id, scalars, training_history, dataset_info.task)
    tracking.log_folder(run_id, folder)
    return run_report
