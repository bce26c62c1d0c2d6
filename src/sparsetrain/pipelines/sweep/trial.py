"""One trial of the sweep: suggest -> config -> train -> score on validation -> its nested MLflow run;
and the refit of the best trial on train + validation.

A trial trains through the recipe of ``kedro run`` (:func:`sparsetrain.recipe.train_network`) and is
scored by the same code (:func:`sparsetrain.scoring.evaluate_network`), so that a trial and a run
with the same parameters are the same model with the same metrics. Its configuration is the run's
typed :class:`~sparsetrain.config.SparsetrainConfig` with the suggested values merged in, parsed
once (:func:`trial_config`).

With a cross-validated objective (``sweep.objective: cv_val_accuracy``, ...) a trial is the whole
recipe cross-validated over ``evaluation.cv_folds`` x ``cv_repeats`` folds of the train +
validation rows (:func:`cross_validated_metrics`) and scored by the mean over the folds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import optuna
from torch import nn

from sparsetrain import tracking
from sparsetrain.config import SparsetrainConfig, SweepConfig, parse_config, unflatten
from sparsetrain.config.space import is_cv_objective, run_name
from sparsetrain.core.data import Dataset, DatasetInfo, Splits
from sparsetrain.core.training import History
from sparsetrain.errors import SparsetrainError
from sparsetrain.recipe import FoldFit, FoldResult, compress_splits, cross_validate, cv_metrics, train_network
from sparsetrain.scoring import evaluate_network

from . import study as studies
from .report import require_best

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- configuration


def trial_config(base: SparsetrainConfig, values: Mapping[str, Any]) -> SparsetrainConfig:
    """The run's configuration with a trial's values (dotted keys) merged in, parsed once: every
    section's own checks and the cross-section ones run on the combination the trial tries.
    Trials train quietly: the sweep prints one line per trial instead of one per epoch."""
    tree = base.model_dump()
    for dotted, value in {**values, "training.verbose": False}.items():
        section, leaf = dotted.split(".", 1)
        tree[section][leaf] = value
    return parse_config(tree)


def splits_for(
    cfg: SparsetrainConfig, base: SparsetrainConfig, model_input: Splits, standardized_splits: Splits
) -> tuple[Any, Splits] | None:
    """``(reducer, splits)`` refit on the train split when ``cfg`` changes ``compression.*``;
    None when the pipeline's own compressed splits serve."""
    if cfg.compression == base.compression:
        return None
    reducer, _, splits = compress_splits(standardized_splits, cfg.compression, cfg.data.seed)
    return reducer, splits


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:500]


# ------------------------------------------------------------------------------- scoring


def validation_metrics(
    network: nn.Module, splits: Splits, info: DatasetInfo, history: History
) -> dict[str, float]:
    """Every metric of a run's evaluation, scored on the validation split (the test split is not
    even handed over), plus ``val_loss`` at the best epoch; no latency timings."""
    on_val = Splits(splits.X_train, splits.y_train, splits.X_val, splits.y_val, splits.X_val, splits.y_val)
    scored = evaluate_network(network, on_val, info, history, speed=False)
    metrics = {k: v for k, v in scored.items() if not k.startswith("test_")}
    if history.val_loss:
        metrics["val_loss"] = float(history.val_loss[min(history.best_epoch, len(history.val_loss) - 1)])
    return metrics


def cross_validated_metrics(
    cfg: SparsetrainConfig, standardized_splits: Splits, info: DatasetInfo
) -> tuple[dict[str, float], History]:
    """A trial scored by cross-validation of its whole recipe
    (:func:`sparsetrain.recipe.cross_validate`) over the train + validation rows; the test split
    is not even handed over.

    The rows are the pipeline's standardized ones: each fold refits the standardizer on its own
    training part, and standardizing is affine per feature, so that refit on standardized rows is
    the same map as one fitted on the fold's raw rows: no fold sees its held-out part.

    Returns the metrics ``cv_<metric>`` (the mean over folds: the objective, e.g.
    ``cv_val_accuracy``) with ``cv_<metric>_std``, ``_ci95_low``, ``_ci95_high`` for every
    held-out ``val_*`` metric, ``cv_folds_run``, and the fold mean of every other metric under its
    own name (``density``, which ``sweep.max_density`` and the frontier read, ``nonzero_params``,
    ``density.layer0``, ...); and a History for the refit: the median epoch early stopping chose
    over the folds."""
    s = standardized_splits
    rows = Dataset(
        X=np.concatenate([s.X_train, s.X_val]), y=np.concatenate([s.y_train, s.y_val]),
        feature_names=info.feature_names, task=info.task, image_shape=info.image_shape,
        informative=info.informative, class_names=info.class_names, target=info.target,
    )
    histories: list[History] = []

    def keep_history(result: FoldResult, fit: FoldFit) -> None:
        histories.append(fit.history)

    results = cross_validate(rows, cfg, info, on_fold=keep_history)
    metrics: dict[str, float] = {}
    for key, value in cv_metrics(results).items():
        metrics[key.removesuffix("_mean")] = value  # cv_val_accuracy_mean -> cv_val_accuracy
    for key in results[0].metrics:
        if not key.startswith("val_"):
            metrics[key] = float(np.mean([r.metrics[key] for r in results]))
    history = History(
        best_epoch=int(round(float(np.median([h.best_epoch for h in histories])))),
        epochs_run=max(h.epochs_run for h in histories),
        stopped_early=any(h.stopped_early for h in histories),
        seconds=float(sum(h.seconds for h in histories)),
    )
    return metrics, history


# ------------------------------------------------------------------------------- the objective


@dataclass(frozen=True)
class TrialData:
    """What every trial trains on: the pipeline's compressed splits, the standardized ones (for a
    trial that sweeps ``compression.*``), and the dataset's description."""

    model_input: Splits
    standardized_splits: Splits
    info: DatasetInfo


class TrialRunner:
    """The Optuna objective: one trial = suggest, configure, train, score on validation, track."""

    def __init__(
        self,
        cfg: SweepConfig,
        base: SparsetrainConfig,
        data: TrialData,
        storage: optuna.storages.BaseStorage,
        parent: mlflow.entities.Run,
    ) -> None:
        self.cfg, self.base, self.data, self.storage = cfg, base, data, storage
        self.space = cfg.search_space()
        self.parent_run_id = parent.info.run_id
        self.experiment_id = parent.info.experiment_id

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        values = studies.suggest(trial, self.space)
        # the name and the record need no parse; the one parse is in the trial's run
        flat = {**self.base.flat(), **values, "training.verbose": False}
        name = run_name(flat, self.space)
        for key, value in {
            "params": values,
            "config": flat,
            "run_name": name,
            "worker": studies.worker_id(),
            "mlflow_parent_run_id": self.parent_run_id,
        }.items():
            trial.set_user_attr(key, value)
        try:
            with studies.attr_heartbeat(trial, self.storage, self.cfg.heartbeat_s):
                metrics, history = self._tracked(trial, name, values, flat)
        except BaseException as error:  # diverged, raised, interrupted: the reason goes with the trial
            trial.set_user_attr("fail_reason", _reason(error))
            raise  # Optuna records the trial FAIL and, for an Exception, goes on with the next
        trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items()})
        trial.set_user_attr("density", float(metrics["density"]))
        trial.set_user_attr(
            "history",
            {
                "best_epoch": history.best_epoch,
                "epochs_run": history.epochs_run,
                "stopped_early": history.stopped_early,
            },
        )
        value = metrics[self.cfg.objective]
        return (value, float(metrics["density"])) if self.cfg.multi_objective else value

    def _tracked(
        self, trial: optuna.Trial, name: str, values: Mapping[str, Any], flat: dict[str, Any]
    ) -> tuple[dict[str, float], History]:
        """Configure, train and score inside the trial's nested MLflow run. The run carries the
        process tags, so that if this worker dies the next run closes it as an orphan."""
        tags = {
            **tracking.process_tags(),
            "sweep_study": self.cfg.study_name,
            "sweep_trial": str(trial.number),
            "sweep_role": "trial",
            "sweep_objective": self.cfg.objective,
        }
        with mlflow.start_run(run_name=name, nested=True, experiment_id=self.experiment_id, tags=tags) as run:
            run_id = run.info.run_id
            trial.set_user_attr("mlflow_run_id", run_id)
            try:
                try:
                    cfg = trial_config(self.base, values)
                except SparsetrainError:
                    tracking.log_params(flat)
                    raise
                config = cfg.flat()
                trial.set_user_attr("config", config)
                tracking.log_params(config)
                metrics, history = self._score(cfg)
                tracking.log_metrics(run_id, *tracking.training_curves(metrics, history))
                value = metrics.get(self.cfg.objective)
                if value is None or not math.isfinite(value):
                    raise SparsetrainError(f"sweep.objective: the trial scored {self.cfg.objective}={value}")
            except BaseException as error:
                mlflow.set_tag("sweep_fail_reason", _reason(error))
                raise  # MLflow ends the run FAILED (KILLED on Ctrl-C)
        return metrics, history

    def _score(self, cfg: SparsetrainConfig) -> tuple[dict[str, float], History]:
        """Train and score the trial's configuration: on the train split, scored on validation;
        or, with a cv_ objective, cross-validated over the train + validation rows."""
        data = self.data
        if is_cv_objective(self.cfg.objective):
            return cross_validated_metrics(cfg, data.standardized_splits, data.info)
        compressed = splits_for(cfg, self.base, data.model_input, data.standardized_splits)
        splits = data.model_input if compressed is None else compressed[1]
        network, history = train_network(splits, data.info, cfg.model, cfg.sparsity, cfg.training)
        return validation_metrics(network, splits, data.info, history), history


def close_killed_runs(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Stale-trial callback: the worker of ``trial`` died; close its MLflow runs as KILLED."""
    client = mlflow.MlflowClient()
    for key in ("mlflow_run_id", "mlflow_parent_run_id"):
        run_id = trial.user_attrs.get(key)
        if not run_id:
            continue
        try:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "sweep_fail_reason", studies.STALE_REASON)
                client.set_terminated(run_id, "KILLED")
        except Exception as error:  # tracking is best effort here; the trial is failed already
            logger.warning(
                "could not close MLflow run %s of killed trial %d: %s", run_id, trial.number, error
            )
    logger.warning("sweep: trial %d was left RUNNING by a dead worker; marked FAIL", trial.number)


# ------------------------------------------------------------------------------- the refit


def refit_config(best: Mapping[str, Any], base: SparsetrainConfig) -> SparsetrainConfig:
    """The best trial's configuration as it trained (it may come from another worker: its record
    in the study is the truth), for the epochs its early stopping chose and without early
    stopping; the data and registry sections and the verbosity are this run's own. One parse."""
    tree = unflatten(best["config"])
    tree["data"], tree["registry"] = base.data, base.registry
    tree["training"] = {
        **tree["training"],
        "epochs": best["refit_epochs"],
        "early_stopping": None,
        "verbose": base.training.verbose,
    }
    return parse_config(tree)


def refit_best(
    summary: Mapping[str, Any],
    standardized_splits: Splits,
    model_input: Splits,
    reducer: Any,
    info: DatasetInfo,
    base: SparsetrainConfig,
) -> tuple[nn.Module, Any, Splits, History]:
    """Train the best trial's configuration on train + validation for the epochs its early
    stopping chose; the test split stays for the one final evaluation. Returns the network, its
    reducer, the refit splits (no validation rows) and the history."""
    best = require_best(summary)
    cfg = refit_config(best, base)
    splits = model_input
    compressed = splits_for(cfg, base, model_input, standardized_splits)
    if compressed is not None:
        reducer, splits = compressed
    X = np.concatenate([splits.X_train, splits.X_val])
    y = np.concatenate([splits.y_train, splits.y_val])
    refit = Splits(X, y, X[:0], y[:0], splits.X_test, splits.y_test)
    logger.info(
        "sweep: refitting trial %d (%s) on train + validation for %d epochs",
        best["number"], best["run_name"], best["refit_epochs"],
    )
    network, history = train_network(refit, info, cfg.model, cfg.sparsity, cfg.training)
    return network, reducer, refit, history
