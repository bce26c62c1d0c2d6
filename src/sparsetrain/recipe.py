"""The training recipe: the one place that turns typed config sections into core objects and trains.

A `kedro run`, a sweep trial, the benchmarks and cross-validation folds all train through
:func:`train_network`, so that a trial and a run with the same parameters are the same model.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from torch import nn

from sparsetrain.config import CompressionConfig, ModelConfig, SparsityConfig, TrainingConfig
from sparsetrain.core.compression import fit_reducer, transform
from sparsetrain.core.data import DatasetInfo, Splits
from sparsetrain.core.models import build_model
from sparsetrain.core.penalties import Penalty, make_penalty
from sparsetrain.core.sparsity.pruner import Pruner, make_pruner
from sparsetrain.core.training import History, TrainSettings, fit, log_progress, seed_everything


def train_settings(cfg: TrainingConfig) -> TrainSettings:
    """The loop's settings: every key of the ``training`` section that is a field of
    :class:`TrainSettings`, by name, so that a key added to both is carried without a line here;
    the rest (``verbose``) is the recipe's own."""
    names = {f.name for f in fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in cfg.model_dump().items() if k in names})


def build_penalty(cfg: SparsityConfig) -> Penalty:
    """The penalty that ``sparsity.penalty`` names, with the keys it may read."""
    return make_penalty(cfg.penalty, cfg.strength, l1_ratio=cfg.l1_ratio, groups=cfg.groups)


def build_pruner(cfg: SparsityConfig) -> Pruner:
    """The pruner that ``sparsity.pruning`` names, with the keys it may read."""
    return make_pruner(
        cfg.pruning, target_density=cfg.target_density, threshold=cfg.threshold, scope=cfg.scope,
        prune_start=cfg.prune_start, prune_end=cfg.prune_end, finetune_epochs=cfg.finetune_epochs,
    )


def train_network(
    splits: Splits,
    info: DatasetInfo,
    model_cfg: ModelConfig,
    sparsity_cfg: SparsityConfig,
    training_cfg: TrainingConfig,
    callbacks: list | None = None,
) -> tuple[nn.Module, History]:
    """Seed, build, fit on the train split, early-stop on the validation split. ``callbacks``
    None: one progress line per epoch if ``training.verbose``."""
    n_features = splits.X_train.shape[1]
    seed_everything(training_cfg.seed)
    network = build_model(
        model_cfg.kind, n_features, info.n_outputs,
        hidden=model_cfg.hidden, dropout=model_cfg.dropout, batch_norm=model_cfg.batch_norm,
        init=model_cfg.init, image_shape=info.image_shape_at(n_features),
    )
    if callbacks is None:
        callbacks = [log_progress] if training_cfg.verbose else []
    return fit(
        network, splits.X_train, splits.y_train, splits.X_val, splits.y_val,
        task=info.task, settings=train_settings(training_cfg), penalty=build_penalty(sparsity_cfg),
        pruner=build_pruner(sparsity_cfg), callbacks=callbacks,
    )


def compress_splits(splits: Splits, cfg: CompressionConfig, seed: int) -> tuple[Any, dict[str, Any], Splits]:
    """Fit the reducer on the training split only, then project every split."""
    reducer, summary = fit_reducer(cfg.method, cfg.n_components, splits.X_train, seed)
    if summary["method"] == "none":  # the identity: no copy of the splits
        return reducer, summary, splits
    project = lambda X: transform(reducer, X)  # noqa: E731
    return reducer, summary, Splits(
        project(splits.X_train), splits.y_train, project(splits.X_val), splits.y_val, project(splits.X_test), splits.y_test
    )
