"""The training recipe: the one place that turns typed config sections into core objects and trains.

A `kedro run`, a sweep trial, the benchmarks and cross-validation folds all train through
:func:`train_network`, so that a trial and a run with the same parameters are the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from sparsetrain.config import (
    CompressionConfig,
    ModelConfig,
    SparsetrainConfig,
    SparsityConfig,
    TrainingConfig,
)
from sparsetrain.core import distributed
from sparsetrain.core.compression import fit_reducer, transform
from sparsetrain.core.cv import Summary, fold_indices, summarize
from sparsetrain.core.data import Dataset, DatasetInfo, Splits, Standardizer
from sparsetrain.core.models import build_model
from sparsetrain.core.penalties import Penalty, make_penalty
from sparsetrain.core.sparsity.pruner import Pruner, make_pruner
from sparsetrain.core.training import History, TrainSettings, fit, log_progress, seed_everything
from sparsetrain.errors import SparsetrainError
from sparsetrain.scoring import evaluate_network


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
        update_every=cfg.update_every, layer_density=cfg.layer_density,
        min_layer_density=cfg.min_layer_density, n=cfg.n, m=cfg.m,
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
    if sparsity_cfg.selection == "forward":  # greedy input selection, then this recipe on those columns
        from sparsetrain.core import selection as sel

        chosen = sel.forward_select(
            splits.X_train, splits.y_train, splits.X_val, splits.y_val, task=info.task,
            max_features=sparsity_cfg.max_features, feature_names=info.feature_names,
            on_step=sel.log_step if training_cfg.verbose else None,
        )
        share = len(chosen.features) / n_features  # the narrow refit's density, seen at full width
        shown = ([log_progress] if training_cfg.verbose else []) if callbacks is None else callbacks
        small, history = train_network(
            sel.restrict_splits(splits, chosen.features), info, model_cfg,
            sparsity_cfg.model_copy(update={"selection": "none"}), training_cfg,
            callbacks=sel.widen_callbacks(shown, share),
        )
        return sel.embed_columns(small, chosen.features, n_features), sel.widen_history(history, share)
    seed_everything(training_cfg.seed)
    network = build_model(
        model_cfg.kind, n_features, info.n_outputs,
        hidden=model_cfg.hidden, dropout=model_cfg.dropout, batch_norm=model_cfg.batch_norm,
        init=model_cfg.init, image_shape=info.image_shape_at(n_features),
    )
    if callbacks is None:
        callbacks = [log_progress] if training_cfg.verbose else []
    fit_args = dict(
        model=network, X_train=splits.X_train, y_train=splits.y_train, X_val=splits.X_val,
        y_val=splits.y_val, task=info.task, settings=train_settings(training_cfg),
        penalty=build_penalty(sparsity_cfg), pruner=build_pruner(sparsity_cfg),
    )
    return fit_on_ranks(fit_args, training_cfg, callbacks)


def fit_on_ranks(fit_args: dict[str, Any], cfg: TrainingConfig, callbacks: list) -> tuple[nn.Module, History]:
    """:func:`fit` in this process, on ``training.distributed.world_size`` spawned ranks, or as the
    rank that torchrun started this process as (only rank 0 reports progress)."""
    shard, wanted = distributed.torchrun_shard(), cfg.distributed.world_size
    if shard is not None:
        if wanted not in (1, shard.world_size):
            raise SparsetrainError(
                f"training.distributed.world_size is {wanted} but torchrun started {shard.world_size} "
                "ranks; drop the parameter (torchrun decides) or make them agree"
            )
        settings = replace(fit_args["settings"], device=distributed.rank_device(cfg.device, shard))
        distributed.join(shard, torch.device(settings.device), cfg.distributed.backend)
        return fit(**{**fit_args, "settings": settings}, shard=shard,
                   callbacks=callbacks if shard.is_main else [])
    if wanted > 1:
        return distributed.launch(
            fit, fit_args, wanted, device=cfg.device, backend=cfg.distributed.backend, callbacks=callbacks
        )
    return fit(**fit_args, callbacks=callbacks)


def compress_splits(splits: Splits, cfg: CompressionConfig, seed: int) -> tuple[Any, dict[str, Any], Splits]:
    """Fit the reducer on the training split only, then project every split."""
    reducer, summary = fit_reducer(cfg.method, cfg.n_components, splits.X_train, seed)
    if summary["method"] == "none":  # the identity: no copy of the splits
        return reducer, summary, splits
    project = lambda X: transform(reducer, X)  # noqa: E731
    return reducer, summary, Splits(
        project(splits.X_train), splits.y_train, project(splits.X_val), splits.y_val,
        project(splits.X_test), splits.y_test,
    )


# --------------------------------------------------------------------------------------------
# cross-validation of the whole recipe


@dataclass(frozen=True)
class Fold:
    """One fit of a cross-validation: its repeat and fold (both from 1) and the rows (indices into
    the dataset handed to :func:`cross_validate`) of its three parts. ``fit_rows`` and
    ``stop_rows`` together are the fold's training part; ``held_out_rows`` are scored on and seen
    by no fit."""

    repeat: int
    fold: int
    n_repeats: int
    n_folds: int
    fit_rows: np.ndarray  # standardizer, reducer and network are fitted on these only
    stop_rows: np.ndarray  # early stopping (``data.val_size`` of the training part; may be empty)
    held_out_rows: np.ndarray

    @property
    def label(self) -> str:
        """``fold 2/5``, or ``fold 2/5 of repeat 1/3`` when repeated."""
        label = f"fold {self.fold}/{self.n_folds}"
        return label if self.n_repeats == 1 else f"{label} of repeat {self.repeat}/{self.n_repeats}"


@dataclass(frozen=True)
class FoldFit:
    """What one fold fitted: the recipe's three fitted steps, the history, and the fold's splits
    (standardized and projected: train = fit rows, val = early-stopping rows, test = held out)."""

    fold: Fold
    standardizer: Standardizer
    reducer: Any
    network: nn.Module
    history: History
    splits: Splits


@dataclass(frozen=True)
class FoldResult:
    """One fold's metrics: the held-out part scored under the ``val_*`` names of a run's
    validation metrics (``val_accuracy``, ``val_rmse``, ...), plus ``density``,
    ``nonzero_params``, the per-layer ``density.<layer>`` and the rest of
    :func:`sparsetrain.scoring.evaluate_network` (no latency timings)."""

    fold: Fold
    metrics: dict[str, float]


def cv_plan(dataset: Dataset, cfg: SparsetrainConfig) -> list[Fold]:
    """The ``evaluation.cv_folds x evaluation.cv_repeats`` folds over every row of ``dataset``
    (the caller leaves its test rows out): stratified for classification, seeded by
    ``data.seed``. Each fold's training part loses an early-stopping part of the same share as a
    run's validation split has of train + validation (``data.val_size / (1 - data.test_size)``),
    stratified and seeded the same way."""
    folds, repeats, seed = cfg.evaluation.cv_folds, cfg.evaluation.cv_repeats, cfg.data.seed
    classification = dataset.task == "classification"
    stop_share = cfg.data.val_size / (1 - cfg.data.test_size)
    plan = []
    indices = fold_indices(dataset.y, dataset.task, folds, repeats, seed)
    for index, (train_rows, held_out_rows) in enumerate(indices):
        if stop_share > 0:
            try:
                fit_rows, stop_rows = train_test_split(
                    train_rows, test_size=stop_share, random_state=seed,
                    stratify=dataset.y[train_rows] if classification else None,
                )
            except ValueError as error:
                raise SparsetrainError(
                    f"data.val_size={cfg.data.val_size:g}: cannot split an early-stopping part off the "
                    f"{len(train_rows)} training rows of a fold ({error}); lower evaluation.cv_folds or "
                    "change data.val_size"
                ) from None
        else:
            fit_rows, stop_rows = train_rows, train_rows[:0]
        plan.append(
            Fold(index // folds + 1, index % folds + 1, repeats, folds, np.sort(fit_rows), np.sort(stop_rows),
                 np.sort(held_out_rows))
        )
    return plan


def fit_fold(
    dataset: Dataset, fold: Fold, cfg: SparsetrainConfig, info: DatasetInfo | None = None
) -> FoldFit:
    """The whole recipe on one fold, as a run does it on its splits: the standardizer fitted on
    the fold's fit rows, the reducer on them (:func:`compress_splits`), the network trained on them
    with early stopping on the stop rows (:func:`train_network`, quietly); the held-out rows are
    only transformed."""
    info = info or DatasetInfo.of(dataset)
    X, y = dataset.X, dataset.y
    standardizer = Standardizer().fit(X[fold.fit_rows])
    scale = standardizer.transform
    standardized = Splits(
        scale(X[fold.fit_rows]), y[fold.fit_rows],
        scale(X[fold.stop_rows]), y[fold.stop_rows],
        scale(X[fold.held_out_rows]), y[fold.held_out_rows],
    )
    reducer, _, splits = compress_splits(standardized, cfg.compression, cfg.data.seed)
    network, history = train_network(splits, info, cfg.model, cfg.sparsity, cfg.training, callbacks=[])
    return FoldFit(fold, standardizer, reducer, network, history, splits)


def score_fold(fit: FoldFit, info: DatasetInfo) -> dict[str, float]:
    """The fold's network scored on its held-out rows, under the ``val_*`` names (see
    :class:`FoldResult`)."""
    s = fit.splits
    held_out = Splits(s.X_train, s.y_train, s.X_test, s.y_test, s.X_test, s.y_test)
    metrics = evaluate_network(fit.network, held_out, info, fit.history, speed=False)
    return {k: v for k, v in metrics.items() if not k.startswith("test_")}


def cross_validate(
    dataset: Dataset,
    cfg: SparsetrainConfig,
    info: DatasetInfo | None = None,
    on_fold: Callable[[FoldResult, FoldFit], None] | None = None,
) -> list[FoldResult]:
    """k-fold cross-validation of the whole recipe (standardizer, reducer, network refit in every
    fold on its training part only, :func:`fit_fold`) over every row of ``dataset``, per
    ``evaluation.cv_folds`` / ``cv_repeats`` (:func:`cv_plan`). ``info`` describes the data as the
    run knows it (its class count; default: of ``dataset``). ``on_fold(result, fit)`` is called
    after each fold: the caller's logging, tracking or checks; nothing else here has a side
    effect. Raises SparsetrainError when ``evaluation.cv_folds`` < 2."""
    if cfg.evaluation.cv_folds < 2:
        raise SparsetrainError(
            f"evaluation.cv_folds={cfg.evaluation.cv_folds}: cross-validation needs at least 2 folds"
        )
    info = info or DatasetInfo.of(dataset)
    results = []
    for fold in cv_plan(dataset, cfg):
        fitted = fit_fold(dataset, fold, cfg, info)
        result = FoldResult(fold, score_fold(fitted, info))
        if on_fold is not None:
            on_fold(result, fitted)
        results.append(result)
    return results


def cv_summarized(metric: str) -> bool:
    """The fold metrics summarized over folds: every held-out ``val_*`` metric, ``density`` and
    ``nonzero_params``."""
    return metric.startswith("val_") or metric in ("density", "nonzero_params")


def cv_summaries(results: list[FoldResult]) -> dict[str, Summary]:
    """Mean, std, standard error and t-based 95% interval over folds (:func:`core.cv.summarize`)
    of each summarized metric (:func:`cv_summarized`) that every fold has."""
    if not results:
        return {}
    names = [k for k in results[0].metrics if cv_summarized(k) and all(k in r.metrics for r in results)]
    return {name: summarize([r.metrics[name] for r in results]) for name in names}


def cv_metrics(results: list[FoldResult]) -> dict[str, float]:
    """A cross-validation as run metrics: ``cv_<metric>_mean``, ``_std``, ``_ci95_low``,
    ``_ci95_high`` (``cv_val_accuracy_mean``, ``cv_density_mean``, ...) and ``cv_folds_run``."""
    metrics = {"cv_folds_run": float(len(results))}
    for name, summary in cv_summaries(results).items():
        for part in ("mean", "std", "ci95_low", "ci95_high"):
            metrics[f"cv_{name}_{part}"] = float(getattr(summary, part))
    return metrics


def cv_table(results: list[FoldResult]) -> list[dict[str, Any]]:
    """One row per fold (``cv/folds.csv``): repeat, fold, the size of each part, every metric."""
    return [
        {
            "repeat": r.fold.repeat, "fold": r.fold.fold, "n_fit": len(r.fold.fit_rows),
            "n_early_stopping": len(r.fold.stop_rows), "n_held_out": len(r.fold.held_out_rows), **r.metrics,
        }
        for r in results
    ]
