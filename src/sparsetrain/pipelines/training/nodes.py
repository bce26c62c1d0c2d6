"""Training: build the configured network, penalty and pruner, and fit them on the train split."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from sparsetrain.config import parse_section
from sparsetrain.core.data import Splits
from sparsetrain.core.models import build_model
from sparsetrain.core.penalties import make_penalty
from sparsetrain.core.sparsity.pruner import make_pruner
from sparsetrain.core.training import History, fit, log_progress, seed_everything

logger = logging.getLogger(__name__)


def train_model(
    model_input: Splits,
    dataset_info: dict[str, Any],
    model: dict[str, Any],
    sparsity: dict[str, Any],
    training: dict[str, Any],
) -> tuple[nn.Module, dict[str, Any]]:
    """Fit on the train split, early-stop on the validation split; the test split stays unseen."""
    model_cfg = parse_section("model", model)
    sparsity_cfg = parse_section("sparsity", sparsity)
    training_cfg = parse_section("training", training)
    network, history = train_network(model_input, dataset_info, model_cfg, sparsity_cfg, training_cfg)
    return network, history_record(history)


def train_network(splits: Splits, dataset_info: dict[str, Any], model_cfg, sparsity_cfg, training_cfg) -> tuple[nn.Module, History]:
    """The shared recipe of a run and of a sweep trial: seed, build, fit."""
    task = dataset_info["task"]
    n_outputs = dataset_info["n_classes"] if task == "classification" else 1
    n_features = splits.X_train.shape[1]
    image_shape = dataset_info["image_shape"]
    # Compression changes the width: only an uncompressed image keeps its shape.
    if image_shape is not None and n_features != dataset_info["n_features"]:
        image_shape = None
    seed_everything(training_cfg.seed)
    network = build_model(
        model_cfg.kind, n_features, n_outputs,
        hidden=model_cfg.hidden, dropout=model_cfg.dropout, batch_norm=model_cfg.batch_norm,
        init=model_cfg.init, image_shape=tuple(image_shape) if image_shape else None,
    )
    penalty = make_penalty(
        sparsity_cfg.penalty, sparsity_cfg.strength, l1_ratio=sparsity_cfg.l1_ratio, groups=sparsity_cfg.groups
    )
    callbacks = [log_progress] if training_cfg.verbose else []
    return fit(
        network, splits.X_train, splits.y_train, splits.X_val, splits.y_val,
        task=task, settings=training_cfg, penalty=penalty, pruner=make_pruner(sparsity_cfg), callbacks=callbacks,
    )


def history_record(history: History) -> dict[str, Any]:
    """The history as plain data (for the catalog, plots and MLflow)."""
    return {
        "train_loss": history.train_loss,
        "val_loss": history.val_loss,
        "density": history.density,
        "best_epoch": history.best_epoch,
        "epochs_run": history.epochs_run,
        "stopped_early": history.stopped_early,
        "train_seconds": history.seconds,
        "device": history.device,
    }
