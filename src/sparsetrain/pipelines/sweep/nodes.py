"""Sweep: an Optuna study whose trials train on the train split and score on the validation
split, each a nested MLflow run; then the study's report, and the best trial refit on
train + validation, scored once on the test split and registered.

The recipe of a trial is the one of ``kedro run`` (``training.nodes.train_network``,
``evaluation.nodes.evaluate_model``); this module adds the study, the tracking and the choice.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric

from sparsetrain.config import (
    SparsetrainConfig,
    SweepConfig,
    parse_config,
    parse_section,
    parse_sweep,
    unflatten,
)
from sparsetrain.core.data import Splits
from sparsetrain.config.space import pareto_mask, run_name
from sparsetrain.errors import SparsetrainError
from sparsetrain.pipelines.compression.nodes import compress, fit_compression
from sparsetrain.pipelines.evaluation.nodes import evaluate_model
from sparsetrain.pipelines.registry.nodes import register_model
from sparsetrain.pipelines.training.nodes import history_record, train_network

from . import study as studies

logger = logging.getLogger(__name__)

# Trial metrics kept in the trials table (besides every val_* metric).
TABLE_METRICS = ("density", "nonzero_params", "total_params", "bytes_sparse", "train_seconds", "epochs_run")


def _params(data, compression, model, sparsity, training, sweep) -> dict[str, Any]:
    return {
        "data": data,
        "compression": compression,
        "model": model,
        "sparsity": sparsity,
        "training": training,
        "sweep": sweep,
    }


# ------------------------------------------------------------------------------- the trials


def validation_metrics(
    network, splits: Splits, dataset_info: dict[str, Any], history: dict[str, Any]
) -> dict[str, float]:
    """Every metric of ``evaluate_model``, scored on the validation split (the test split is
    not even handed over), plus ``val_loss`` at the best epoch."""
    on_val = Splits(splits.X_train, splits.y_train, splits.X_val, splits.y_val, splits.X_val, splits.y_val)
    metrics = {
        k: v
        for k, v in evaluate_model(network, on_val, dataset_info, history).items()
        if not k.startswith("test_")
    }
    if history["val_loss"]:
        metrics["val_loss"] = float(
            history["val_loss"][min(history["best_epoch"], len(history["val_loss"]) - 1)]
        )
    return metrics


def _log_trial_run(metrics: Mapping[str, float], history: Mapping[str, Any]) -> None:
    mlflow.log_metrics(dict(metrics))
    now = int(time.time() * 1000)
    curves = [
        Metric(name, float(value), now, step)
        for name in ("train_loss", "val_loss")
        for step, value in enumerate(history[name])
    ]
    if curves:
        mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=curves)


class TrialRunner:
    """The objective: one trial = suggest, configure, train, score on validation, track."""

    def __init__(
        self,
        cfg: SweepConfig,
        base: SparsetrainConfig,
        model_input: Splits,
        standardized_splits: Splits,
        dataset_info: dict[str, Any],
        storage: optuna.storages.BaseStorage,
    ) -> None:
        self.cfg, self.base = cfg, base
        self.space = cfg.search_space()
        self.model_input = model_input
        self.standardized_splits = standardized_splits
        self.dataset_info = dataset_info
        self.storage = storage
        parent = mlflow.active_run()
        self.parent_run_id = parent.info.run_id if parent else None
        self.experiment_id = parent.info.experiment_id if parent else None

    def splits_for(self, cfg: SparsetrainConfig) -> Splits:
        """The compressed splits of the trial: the pipeline's own, unless the trial sweeps
        compression.*, then a reducer refit on the train split."""
        if cfg.compression == self.base.compression:
            return self.model_input
        compression, data = cfg.compression.model_dump(), cfg.data.model_dump()
        reducer, _ = fit_compression(self.standardized_splits, compression, data)
        return compress(self.standardized_splits, reducer)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        values = studies.suggest(trial, self.space)
        # Trials train quietly: the sweep prints one line per trial instead of one per epoch.
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
                metrics, record = self._tracked(trial, name, flat)
        except BaseException as error:  # diverged, raised, interrupted: the reason goes with the trial
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}".splitlines()[0][:500])
            raise  # Optuna records the trial FAIL and, for an Exception, goes on with the next
        trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items()})
        trial.set_user_attr("density", float(metrics["density"]))
        trial.set_user_attr("history", {k: record[k] for k in ("best_epoch", "epochs_run", "stopped_early")})
        value = metrics[self.cfg.objective]
        return (value, float(metrics["density"])) if self.cfg.multi_objective else value

    def _tracked(
        self, trial: optuna.Trial, name: str, flat: dict[str, Any]
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """Train and score one configuration inside its nested MLflow run."""
        tags = {
            "sweep_study": self.cfg.study_name,
            "sweep_trial": str(trial.number),
            "sweep_role": "trial",
            "sweep_objective": self.cfg.objective,
        }
        with mlflow.start_run(run_name=name, nested=True, experiment_id=self.experiment_id, tags=tags) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            mlflow.log_params(flat)
            try:
                cfg = parse_config(unflatten(flat))
                splits = self.splits_for(cfg)
                network, history = train_network(
                    splits, self.dataset_info, cfg.model, cfg.sparsity, cfg.training
                )
                record = history_record(history)
                metrics = validation_metrics(network, splits, self.dataset_info, record)
                _log_trial_run(metrics, record)
                value = metrics.get(self.cfg.objective)
                if value is None or not math.isfinite(value):
                    raise SparsetrainError(f"sweep.objective: the trial scored {self.cfg.objective}={value}")
            except BaseException as error:
                mlflow.set_tag("sweep_fail_reason", f"{type(error).__name__}: {error}".splitlines()[0][:500])
                raise  # MLflow ends the run FAILED (KILLED on Ctrl-C)
        return metrics, record


def close_killed_runs(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Stale-trial callback: the worker of ``trial`` died; close its MLflow runs as KILLED."""
    client = mlflow.MlflowClient()
    reason = studies.STALE_REASON
    for key in ("mlflow_run_id", "mlflow_parent_run_id"):
        run_id = trial.user_attrs.get(key)
        if not run_id:
            continue
        try:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "sweep_fail_reason", reason)
                client.set_terminated(run_id, "KILLED")
        except Exception as error:  # tracking is best effort here; the trial is failed already
            logger.warning(
                "could not close MLflow run %s of killed trial %d: %s", run_id, trial.number, error
            )
    logger.warning("sweep: trial %d was left RUNNING by a dead worker; marked FAIL", trial.number)


# ------------------------------------------------------------------------------- choosing


def choose(
    records: Sequence[dict[str, Any]], cfg: SweepConfig
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The best trial and the Pareto set (objective vs density) among completed trials within
    ``max_density``. Single-objective: the best objective wins; multi-objective: the Pareto set
    is the answer, and the member with the best objective is the one refit."""
    maximize = cfg.direction == "maximize"
    done = [r for r in records if r["state"] == "COMPLETE" and r["value"] is not None]
    feasible = [r for r in done if cfg.max_density is None or r["metrics"]["density"] <= cfg.max_density]
    if not feasible:
        return None, []
    mask = pareto_mask([r["value"] for r in feasible], [r["metrics"]["density"] for r in feasible], maximize)
    pareto = sorted((r for r, keep in zip(feasible, mask) if keep), key=lambda r: r["metrics"]["density"])
    pool = pareto if cfg.multi_objective else feasible
    sign = 1.0 if maximize else -1.0
    best = max(pool, key=lambda r: (sign * r["value"], -r["metrics"]["density"], -r["number"]))
    return best, pareto


def trials_table(
    records: Sequence[dict[str, Any]], cfg: SweepConfig, best: dict | None, pareto: list[dict]
) -> pd.DataFrame:
    """One row per trial: what it tried, what it scored, whether it is best / Pareto, why it failed."""
    swept = list(dict.fromkeys(k for r in records for k in r["params"]))
    pareto_numbers = {r["number"] for r in pareto}
    rows = []
    for r in records:
        row: dict[str, Any] = {"number": r["number"], "state": r["state"], "run_name": r["run_name"]}
        row.update({key: _cell(r["params"].get(key)) for key in swept})
        row[cfg.objective] = r["value"] if r["value"] is not None else r["metrics"].get(cfg.objective)
        val_metrics = sorted(k for k in r["metrics"] if k.startswith("val_") and k != cfg.objective)
        row.update({k: r["metrics"].get(k) for k in (*TABLE_METRICS, *val_metrics)})
        row.update(
            {
                "pareto": r["number"] in pareto_numbers,
                "best": best is not None and r["number"] == best["number"],
                "fail_reason": r["fail_reason"],
                "duration_s": r["duration_s"],
                "datetime_start": r["datetime_start"],
                "worker": r["worker"],
                "mlflow_run_id": r["mlflow_run_id"],
                "mlflow_parent_run_id": r["mlflow_parent_run_id"],
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(value: Any) -> Any:
    return "x".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def refit_epochs(record: dict[str, Any]) -> int:
    """Epochs for the refit without a validation split: as many as early stopping chose."""
    config, history = record["config"], record["history"]
    if config["sparsity.pruning"] == "none" and config["training.early_stopping"] is not None and history:
        return max(1, int(history["best_epoch"]) + 1)
    return int(config["training.epochs"])


def _summary_entry(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": record["number"],
        "value": record["value"],
        "density": record["metrics"]["density"],
        "run_name": record["run_name"],
        "mlflow_run_id": record["mlflow_run_id"],
        "params": record["params"],
        "config": record["config"],
        "metrics": record["metrics"],
        "refit_epochs": refit_epochs(record),
    }


# ------------------------------------------------------------------------------- nodes


def run_sweep(
    model_input: Splits,
    standardized_splits: Splits,
    dataset_info: dict[str, Any],
    sweep: dict[str, Any],
    data: dict[str, Any],
    compression: dict[str, Any],
    model: dict[str, Any],
    sparsity: dict[str, Any],
    training: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Run ``sweep.n_trials`` more trials of the study (or until ``sweep.timeout_s``), then
    describe the whole study: the trials table and a summary with the best trial and Pareto set
    (twice: once for the report files, once for the nodes downstream)."""
    params = _params(data, compression, model, sparsity, training, sweep)
    cfg, base = parse_sweep(params), parse_config(params)
    study, storage = studies.open_study(cfg, on_stale=close_killed_runs)
    url = studies.storage_url(cfg)
    if mlflow.active_run() is not None:
        mlflow.set_tags(
            {"sweep_study": cfg.study_name, "sweep_role": "parent", "sweep_storage": studies.safe_url(url)}
        )
    studies.fail_stale_trials(study, storage, 2 * cfg.heartbeat_s, close_killed_runs)
    before = len(study.trials)
    logger.info(
        "sweep '%s' (%s, %s sampler): %d trials so far, running %s more%s",
        cfg.study_name,
        studies.safe_url(url),
        cfg.sampler,
        before,
        cfg.n_trials or "unlimited",
        f" for at most {cfg.timeout_s:g} s" if cfg.timeout_s else "",
    )
    runner = TrialRunner(cfg, base, model_input, standardized_splits, dataset_info, storage)

    def after_each(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        _log_progress(study, trial, cfg)
        if not isinstance(storage, optuna.storages.RDBStorage):  # RDB storages check by themselves
            studies.fail_stale_trials(study, storage, 2 * cfg.heartbeat_s, close_killed_runs)

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our line per trial replaces Optuna's
    try:
        study.optimize(
            runner, n_trials=cfg.n_trials, timeout=cfg.timeout_s, catch=(Exception,), callbacks=[after_each]
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    records = studies.trial_records(study)
    best, pareto = choose(records, cfg)
    table = trials_table(records, cfg, best, pareto)
    summary = {
        "study_name": cfg.study_name,
        "storage": studies.safe_url(url),
        "objective": cfg.objective,
        "direction": cfg.direction,
        "multi_objective": cfg.multi_objective,
        "max_density": cfg.max_density,
        "n_trials": len(records),
        "n_trials_this_run": len(records) - before,
        "states": {state: int((table["state"] == state).sum()) for state in table["state"].unique()},
        "best": _summary_entry(best) if best else None,
        "pareto": [_summary_entry(r) for r in pareto],
    }
    return table, summary, table.copy(), summary


def _log_progress(study: optuna.Study, trial: optuna.trial.FrozenTrial, cfg: SweepConfig) -> None:
    """One line per finished trial: what it tried, what it scored, the best so far."""
    params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.user_attrs.get("params", trial.params).items())
    if trial.state.name == "COMPLETE":
        density = trial.user_attrs.get("density", float("nan"))
        outcome = f"{cfg.objective}={trial.values[0]:.4f} density={density:.3f}"
    else:
        outcome = f"{trial.state.name}: {trial.user_attrs.get('fail_reason', '')}"
    records = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.values[0] if t.values else None,
            "metrics": {"density": t.user_attrs.get("density", 1.0)},
        }
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ]
    best, pareto = choose(records, cfg)
    if best is None:
        so_far = "no best yet"
    elif cfg.multi_objective:
        so_far = f"Pareto set {[r['number'] for r in pareto]}"
    else:
        density = best["metrics"]["density"]
        so_far = f"best #{best['number']} {cfg.objective}={best['value']:.4f} density={density:.3f}"
    logger.info("sweep trial %d %s | %s | %s", trial.number, params, outcome, so_far)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot_frontier(trials: pd.DataFrame, summary: dict[str, Any]) -> Figure:
    """Objective against density for every completed trial, one colour per penalty; the
    Pareto front is ringed and joined, the best trial starred."""
    from sparsetrain.reporting import plt  # the project's Agg-backed pyplot

    objective = summary["objective"]
    done = trials[trials["state"] == "COMPLETE"]
    penalties = _penalty_column(done, summary)
    fig, ax = plt.subplots(figsize=(7, 5))
    for penalty in sorted(penalties.dropna().unique(), key=_penalty_order):
        part = done[penalties == penalty]
        ax.scatter(
            part["density"],
            part[objective],
            s=36,
            alpha=0.8,
            color=f"C{_penalty_order(penalty)}",
            label=str(penalty),
        )
    front = done[done["pareto"]].sort_values("density")
    if len(front):
        ax.scatter(
            front["density"],
            front[objective],
            s=140,
            facecolors="none",
            edgecolors="black",
            linewidths=1.5,
            label="Pareto front",
        )
        ax.step(front["density"], front[objective], where="post", color="black", linewidth=0.8, alpha=0.6)
    best = done[done["best"]]
    if len(best):
        ax.scatter(
            best["density"],
            best[objective],
            marker="*",
            s=260,
            color="gold",
            edgecolors="black",
            zorder=5,
            label=f"best (#{int(best['number'].iloc[0])})",
        )
    if summary.get("max_density") is not None:
        ax.axvline(summary["max_density"], color="grey", linestyle="--", linewidth=1, label="max_density")
    ax.set_xlabel("density (fraction of nonzero prunable weights)")
    ax.set_ylabel(f"{objective} (validation split)")
    failed = int((trials["state"] == "FAIL").sum())
    ax.set_title(
        f"sweep '{summary['study_name']}': {len(done)} trials" + (f", {failed} failed" if failed else "")
    )
    ax.grid(alpha=0.3)
    if len(done):
        ax.legend(loc="best", fontsize=8, title="sparsity.penalty")
    fig.tight_layout()
    return fig


def _penalty_order(penalty: str) -> int:
    """A fixed colour per penalty, the same in every sweep's plot."""
    order = ("none", "l1", "l2", "elasticnet", "group_lasso", "l0")
    return order.index(penalty) if penalty in order else len(order)


def _penalty_column(done: pd.DataFrame, summary: dict[str, Any]) -> pd.Series:
    if "sparsity.penalty" in done:
        return done["sparsity.penalty"]
    penalty = (summary["best"] or {}).get("config", {}).get("sparsity.penalty", "fixed")
    return pd.Series([penalty] * len(done), index=done.index)


def _require_best(summary: dict[str, Any]) -> dict[str, Any]:
    if summary["best"] is None:
        if summary["max_density"] is not None:
            raise SparsetrainError(
                f"sweep.max_density: no completed trial of study '{summary['study_name']}' has a density "
                f"<= {summary['max_density']:g}; raise it, or sweep sparser settings (sweep/trials.csv)"
            )
        raise SparsetrainError(
            f"sweep: no trial of study '{summary['study_name']}' completed; see the fail_reason column "
            "of sweep/trials.csv (data/08_reporting/sweep/trials.csv)"
        )
    return summary["best"]


def _run_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The sections a trial set, as ``kedro run --config`` takes them (data and registry are
    the run's own)."""
    # training.verbose is the sweep's choice (quiet trials), not the trial's: the run keeps its own
    tree = unflatten({k: v for k, v in config.items() if k != "training.verbose"})
    return {
        section: tree[section]
        for section in ("compression", "model", "sparsity", "training")
        if section in tree
    }


def best_params(summary: dict[str, Any]) -> dict[str, Any]:
    """The best trial's configuration as a ``kedro run --config`` file:
    ``kedro run --config data/08_reporting/sweep/best_params.yml`` trains it again."""
    best = _require_best(summary)
    return {"run": {"params": _run_params(best["config"])}}


def pareto_set(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The Pareto set, sparsest first; each entry's ``run`` block is a ``kedro run --config`` file."""
    return [
        {
            "trial": r["number"],
            summary["objective"]: r["value"],
            "density": r["density"],
            "run_name": r["run_name"],
            "run": {"params": _run_params(r["config"])},
        }
        for r in summary["pareto"]
    ]


def best_trial_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The best trial's validation metrics on the parent run, as ``best_<name>``; and counts."""
    metrics = {
        "sweep_n_trials": float(summary["n_trials"]),
        "sweep_pareto_size": float(len(summary["pareto"])),
    }
    for state, count in summary["states"].items():
        metrics[f"sweep_n_{state.lower()}"] = float(count)
    if summary["best"] is not None:
        metrics["best_trial"] = float(summary["best"]["number"])
        metrics.update({f"best_{k}": float(v) for k, v in summary["best"]["metrics"].items()})
    return {name: {"value": value, "step": 0} for name, value in metrics.items()}


def refit_best(
    summary: dict[str, Any],
    standardized_splits: Splits,
    model_input: Splits,
    reducer: Any,
    dataset_info: dict[str, Any],
    compression: dict[str, Any],
) -> tuple[Any, Any, Splits, dict[str, Any]]:
    """Train the best trial's configuration on train + validation for the epochs its early
    stopping chose; the test split stays for the one final evaluation."""
    best = _require_best(summary)
    flat = {**best["config"], "training.epochs": best["refit_epochs"], "training.early_stopping": None}
    cfg = parse_config(unflatten(flat))
    splits = model_input
    if cfg.compression != parse_section("compression", compression):
        reducer, _ = fit_compression(standardized_splits, cfg.compression.model_dump(), cfg.data.model_dump())
        splits = compress(standardized_splits, reducer)
    X = np.concatenate([splits.X_train, splits.X_val])
    y = np.concatenate([splits.y_train, splits.y_val])
    refit = Splits(X, y, X[:0], y[:0], splits.X_test, splits.y_test)
    logger.info(
        "sweep: refitting trial %d (%s) on train + validation for %d epochs",
        best["number"],
        best["run_name"],
        best["refit_epochs"],
    )
    network, history = train_network(refit, dataset_info, cfg.model, cfg.sparsity, cfg.training)
    return network, reducer, refit, history_record(history)


def register_best(
    standardizer: Any,
    reducer: Any,
    network: Any,
    dataset: Any,
    evaluation_metrics: dict[str, float],
    registry: dict[str, Any],
    summary: dict[str, Any],
) -> dict[str, Any]:
    """Register the refit best model, tagged with the study it came from."""
    best = _require_best(summary)
    if mlflow.active_run() is not None:
        mlflow.set_tags({"sweep_best_trial": str(best["number"]), "sweep_best_run_name": best["run_name"]})
    tags = {
        "sweep_study": summary["study_name"],
        "sweep_trial": str(best["number"]),
        f"sweep_{summary['objective']}": f"{best['value']:.6f}",
    }
    return register_model(standardizer, reducer, network, dataset, evaluation_metrics, registry, tags=tags)
