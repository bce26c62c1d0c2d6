"""Regularization path of a linear model, its strength chosen by K-fold CV (`kedro run --pipelines
path`). Thin adapters over :mod:`sparsetrain.core.path` (the numerical part), the scoring,
tracking and serving modules, and :mod:`.plots`.

The rows: the path and the chosen model are fitted on the non-test rows (train + validation), the
same rows the folds split, with a standardizer (and reducer) fitted on them; each fold refits
those on its own training part. The test split is used once, by the chosen model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from sparsetrain import tracking
from sparsetrain.config import PathConfig, SparsetrainConfig, check_path
from sparsetrain.core.cv import fold_indices
from sparsetrain.core.data import Dataset, DatasetInfo, Splits
from sparsetrain.core.path import (
    Choice,
    CVPath,
    Fitted,
    Path,
    Preprocess,
    choose,
    cross_validate_path,
    fit_path,
    lambda_max,
    loss_for,
    metric_for,
    path_penalty,
    strength_grid,
    to_network,
)
from sparsetrain.core.training import History
from sparsetrain.scoring import evaluate_network, feature_table, selection_scores

logger = logging.getLogger(__name__)

DEFAULT_FOLDS = 5  # when evaluation.cv_folds is 0 (off)
# The exact solver's optimality tolerances. Nonzero counts are far more sensitive to it than the
# metric (linear-solvers-facts.md): on digits (L1) 1e-6 left 1-3 near-zero weights (|w| < 2e-3)
# that 1e-7 and 1e-8 agree to remove. The full-data path, whose nonzeros are reported and
# registered, is solved to 1e-7. The folds give only the metric: at 1e-5 they chose the same min
# and 1se strengths as at 1e-6 (per-strength CV accuracy within one held-out row, 0.0035) in half
# the time; 1e-4 moved the 1se choice by one strength.
TOL_PATH, TOL_CV = 1e-7, 1e-5
ARTIFACTS = "path"  # the run's artifact folder of the path


@dataclass(frozen=True)
class PathPlan:
    """What the path's nodes need of the configuration, checked once."""

    penalty: Any  # strength -> Penalty (core.path.path_penalty)
    penalty_name: str
    rule: str
    n_strengths: int
    min_ratio: float
    folds: int
    repeats: int
    seed: int
    preprocess: Preprocess

    @property
    def run_name(self) -> str:
        return f"path-{self.penalty_name}-{self.rule}"


@dataclass(frozen=True)
class PathFit:
    """The full-data path: on the non-test rows, preprocessed by ``fitted`` (fitted on them)."""

    loss: str
    lambda_max: float
    path: Path
    fitted: Fitted


@dataclass(frozen=True)
class PathModel:
    """The chosen model; ``seconds`` and ``iterations`` of the path up to its strength."""

    network: nn.Module
    fitted: Fitted
    strength: float
    seconds: float
    kkt: float
    iterations: int


def plan_path(run: SparsetrainConfig, path: PathConfig) -> PathPlan:
    """Check the run, name it (``path-l1-1se``), log the path's own parameters."""
    check_path(run)
    folds = run.evaluation.cv_folds if run.evaluation.cv_folds >= 2 else DEFAULT_FOLDS
    plan = PathPlan(
        penalty=path_penalty(run.sparsity.penalty, run.sparsity.l1_ratio, run.sparsity.groups),
        penalty_name=run.sparsity.penalty,
        rule=path.choose,
        n_strengths=path.n_strengths,
        min_ratio=path.min_ratio,
        folds=folds,
        repeats=run.evaluation.cv_repeats,
        seed=run.data.seed,
        preprocess=Preprocess(run.compression.method, run.compression.n_components, run.data.seed),
    )
    source = (
        f"evaluation.cv_folds={run.evaluation.cv_folds}"
        if run.evaluation.cv_folds >= 2
        else f"the default, evaluation.cv_folds={run.evaluation.cv_folds} being off"
    )
    logger.info(
        "path: %s penalty, %d strengths down to %g x lambda_max, %d-fold CV (%s)%s, choice by %s",
        plan.penalty_name, plan.n_strengths, plan.min_ratio, folds, source,
        f" x {plan.repeats} repeats" if plan.repeats > 1 else "", plan.rule,
    )
    run_id = tracking.active_run_id()
    tracking.set_run_tags(run_id, {"mlflow.runName": plan.run_name, "path_choose": plan.rule})
    tracking.log_params(
        {"path.n_strengths": plan.n_strengths, "path.min_ratio": plan.min_ratio, "path.choose": plan.rule,
         "path.cv_folds": folds}
    )
    return plan


def _non_test(raw_splits: Splits) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.concatenate([raw_splits.X_train, raw_splits.X_val]),
        np.concatenate([raw_splits.y_train, raw_splits.y_val]),
    )


def fit_full_path(raw_splits: Splits, dataset_info: DatasetInfo, path_plan: PathPlan) -> PathFit:
    """lambda_max and the warm-started path on the non-test rows, at the strengths the folds use."""
    X, y = _non_test(raw_splits)
    fitted = path_plan.preprocess.fit(X)
    Xp = fitted.transform(X)
    loss = loss_for(dataset_info.task, dataset_info.n_classes)
    top = lambda_max(Xp, y, loss=loss, penalty=path_plan.penalty)
    strengths = strength_grid(top, path_plan.n_strengths, path_plan.min_ratio)
    path = fit_path(Xp, y, strengths, loss=loss, penalty=path_plan.penalty, tol=TOL_PATH)
    logger.info(
        "path: lambda_max %.4g on %d rows (%s loss); %d strengths solved in %.1f s, %d -> %d nonzero weights",
        top, len(y), loss, len(strengths), path.seconds.sum(), path.nonzeros[0], path.nonzeros[-1],
    )
    if not path.converged.all():
        missed = int((~path.converged).sum())
        logger.warning("path: %d strengths stopped before tolerance %g", missed, TOL_PATH)
    return PathFit(loss, top, path, fitted)


def cross_validate(
    raw_splits: Splits, dataset_info: DatasetInfo, path_plan: PathPlan, path_fit: PathFit
) -> CVPath:
    """A path per fold of the non-test rows at the same strengths, the preprocessing refit per fold."""
    X, y = _non_test(raw_splits)
    folds = list(fold_indices(y, dataset_info.task, path_plan.folds, path_plan.repeats, path_plan.seed))
    metric, maximize = metric_for(dataset_info.task)

    def progress(i: int, seconds: float) -> None:
        logger.info("path: CV fold %d/%d done in %.1f s", i + 1, len(folds), seconds)

    return cross_validate_path(
        X, y, path_fit.path.strengths, folds, repeats=path_plan.repeats, loss=path_fit.loss,
        penalty=path_plan.penalty, preprocess=path_plan.preprocess, maximize=maximize, tol=TOL_CV,
        on_fold=progress,
    )


def choose_strength(path_cv: CVPath, path_plan: PathPlan, dataset_info: DatasetInfo) -> Choice:
    choice = choose(path_cv.strengths, path_cv.mean, path_cv.sem, path_plan.rule, path_cv.maximize)
    metric, _ = metric_for(dataset_info.task)
    s, mean, sem = path_cv.strengths, path_cv.mean, path_cv.sem
    logger.info(
        "path: min at strength %.4g (CV %s %.4f +- %.4f), 1se at %.4g (%.4f); chosen by %s: %.4g",
        s[choice.best], metric, mean[choice.best], sem[choice.best], s[choice.one_se], mean[choice.one_se],
        choice.rule, s[choice.chosen],
    )
    return choice


def chosen_model(dataset_info: DatasetInfo, path_fit: PathFit, path_choice: Choice) -> PathModel:
    """The model at the chosen strength, fitted on train + validation: the full-data path's
    solution there (warm-started along the path, to the path's tolerance; a cold solve reaches the
    same optimum), so that its nonzeros are the path's at that strength."""
    i, path = path_choice.chosen, path_fit.path
    network = to_network(path.coef[i], path.intercept[i], dataset_info.n_outputs)
    return PathModel(
        network=network,
        fitted=path_fit.fitted,
        strength=float(path.strengths[i]),
        seconds=float(path.seconds[: i + 1].sum()),
        kkt=float(path.kkt[i]),
        iterations=int(path.n_iter[: i + 1].sum()),
    )


def path_table(path_fit: PathFit, path_cv: CVPath, path_choice: Choice, metric: str) -> pd.DataFrame:
    """One row per strength, strongest first: what the plots draw."""
    path = path_fit.path
    marks = [
        ",".join(name for name, at in (("min", path_choice.best), ("1se", path_choice.one_se)) if at == i)
        for i in range(len(path.strengths))
    ]
    return pd.DataFrame({
        "strength": path.strengths,
        "nonzeros": path.nonzeros,
        "nonzero_features": path.nonzero_features,
        "metric": metric,
        "cv_mean": path_cv.mean,
        "cv_sem": path_cv.sem,
        "cv_std": path_cv.std,
        "seconds": path.seconds,
        "cv_seconds": path_cv.seconds.sum(axis=0),
        "kkt": path.kkt,
        "rule": marks,
        "chosen": np.arange(len(path.strengths)) == path_choice.chosen,
    })


def _figures(path_fit: PathFit, path_cv: CVPath, path_choice: Choice, dataset_info: DatasetInfo,
             metric: str, n_folds: int) -> dict[str, Any]:
    from .plots import coefficients_figure, metric_figure, nonzeros_figure

    path, c = path_fit.path, path_choice
    n_inputs = path.coef.shape[2]
    names = dataset_info.feature_names if n_inputs == dataset_info.n_features else [
        f"component_{i}" for i in range(n_inputs)
    ]
    return {
        "coefficients.png": coefficients_figure(path.strengths, path.coef, names, c.chosen, c.rule),
        "metric.png": metric_figure(
            path.strengths, path_cv.mean, path_cv.sem, metric, n_folds, c.best, c.one_se, c.chosen,
            path_cv.maximize,
        ),
        "nonzeros.png": nonzeros_figure(
            path.strengths, path.nonzeros, path.nonzero_features, n_inputs, c.chosen, c.rule
        ),
    }


def report_path(
    path_model: PathModel,
    path_fit: PathFit,
    path_cv: CVPath,
    path_choice: Choice,
    path_plan: PathPlan,
    raw_splits: Splits,
    dataset_info: DatasetInfo,
) -> dict[str, Any]:
    """Score the chosen model once on the test split, write the path's table and figures into the
    run's folder (``path/``), log everything; returns the run report that registration takes."""
    import matplotlib.pyplot as plt

    X, y = _non_test(raw_splits)
    fitted = path_model.fitted
    X_fit = fitted.transform(X)
    no_rows = np.empty((0, X_fit.shape[1]), dtype=X_fit.dtype)  # no validation: it is in the fit
    splits = Splits(X_fit, y, no_rows, y[:0], fitted.transform(raw_splits.X_test), raw_splits.y_test)
    history = History(seconds=path_model.seconds, epochs_run=0)
    scalars = evaluate_network(path_model.network, splits, dataset_info, history)
    n_components = None if fitted.summary.get("method", "none") == "none" else splits.X_train.shape[1]
    selected = feature_table(path_model.network, dataset_info, n_components)
    scalars.update(selection_scores(selected, dataset_info))
    metric, _ = metric_for(dataset_info.task)
    i, path = path_choice.chosen, path_fit.path
    scalars.update({
        "path_lambda_max": path_fit.lambda_max,
        "path_chosen_strength": path_model.strength,
        "path_chosen_nonzeros": float(path.nonzeros[i]),
        f"path_cv_{metric}_at_choice": float(path_cv.mean[i]),
        f"path_cv_{metric}_sem_at_choice": float(path_cv.sem[i]),
        "path_min_strength": float(path.strengths[path_choice.best]),
        "path_1se_strength": float(path.strengths[path_choice.one_se]),
        "path_cv_folds": float(path_cv.scores.shape[1]),
        "path_seconds": float(path.seconds.sum()),
        "path_cv_seconds": float(path_cv.seconds.sum()),
        "kkt_violation": path_model.kkt,
        "solver_iterations": float(path_model.iterations),
    })
    run_id = tracking.active_run_id()
    folder = tracking.run_folder(run_id)
    out = folder / ARTIFACTS
    out.mkdir(exist_ok=True)
    path_table(path_fit, path_cv, path_choice, metric).to_csv(out / "table.csv", index=False)
    n_folds = path_cv.scores.shape[1]
    for name, figure in _figures(path_fit, path_cv, path_choice, dataset_info, metric, n_folds).items():
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
    selected.to_csv(folder / "selected_features.csv", index=False)
    run_report = tracking.log_evaluation(run_id, scalars, history, dataset_info.task)
    tracking.log_folder(run_id, folder)
    test = f"test_{metric}"
    logger.info(
        "path: chosen strength %.4g, %d nonzero weights, %s %.4f",
        path_model.strength, int(scalars["prunable_nonzero"]), test, scalars[test],
    )
    return run_report


def register_path_model(
    path_model: PathModel, dataset: Dataset, path_run_report: dict[str, Any], path_plan: PathPlan,
    run: SparsetrainConfig,
) -> dict[str, Any]:
    """The last node: register the chosen model with the run's configuration at the chosen strength."""
    from sparsetrain.serving import build_predictor, input_example

    sparsity = run.sparsity.model_copy(update={"strength": path_model.strength})
    config = run.model_copy(update={"sparsity": sparsity})
    fitted = path_model.fitted
    predictor = build_predictor(fitted.standardizer, fitted.reducer, path_model.network, dataset)
    tags = {"path_choose": path_plan.rule, "path_strength": f"{path_model.strength:.6g}"}
    return tracking.publish_model(
        path_run_report, predictor, input_example(dataset), dataset.task, run.registry, extra_tags=tags,
        config=config,
    )
