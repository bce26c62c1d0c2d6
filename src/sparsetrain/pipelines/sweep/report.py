"""What a sweep tells: the best trial and the Pareto set, the trials table, the summary, the
frontier plot, ``best_params.yml`` and ``pareto_set.yml``, the parent run's metrics.

Plain records in, plain values and files out: no training, no Optuna trial objects except in
:func:`log_progress`, no MLflow (the nodes log what is written here).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from matplotlib.figure import Figure

from sparsetrain.config import SweepConfig, unflatten
from sparsetrain.config.space import pareto_mask
from sparsetrain.errors import SparsetrainError

logger = logging.getLogger(__name__)

# Trial metrics kept in the trials table (besides every val_* metric).
TABLE_METRICS = ("density", "nonzero_params", "total_params", "bytes_sparse", "train_seconds", "epochs_run")
# The files of the report, by name, as logged under the parent run's artifact path ``sweep/``.
TRIALS, SUMMARY, FRONTIER, BEST_PARAMS, PARETO_SET = (
    "trials.csv", "summary.json", "frontier.png", "best_params.yml", "pareto_set.yml",
)
ARTIFACT_PATH = "sweep"


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


def refit_epochs(record: Mapping[str, Any]) -> int:
    """Epochs for the refit without a validation split: as many as early stopping chose."""
    config, history = record["config"], record["history"]
    if config["sparsity.pruning"] == "none" and config["training.early_stopping"] is not None and history:
        return max(1, int(history["best_epoch"]) + 1)
    return int(config["training.epochs"])


# ------------------------------------------------------------------------------- table, summary


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


def summarize(
    records: Sequence[dict[str, Any]], cfg: SweepConfig, storage: str, before: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The trials table and the summary (objective, best trial, Pareto set with their full
    configurations) of the whole study: every worker, every run; ``before`` trials existed
    when this run started."""
    best, pareto = choose(records, cfg)
    table = trials_table(records, cfg, best, pareto)
    states = table["state"] if len(table) else pd.Series([], dtype=str)
    summary = {
        "study_name": cfg.study_name,
        "storage": storage,
        "objective": cfg.objective,
        "direction": cfg.direction,
        "multi_objective": cfg.multi_objective,
        "max_density": cfg.max_density,
        "n_trials": len(records),
        "n_trials_this_run": len(records) - before,
        "states": {state: int((states == state).sum()) for state in states.unique()},
        "best": _summary_entry(best) if best else None,
        "pareto": [_summary_entry(r) for r in pareto],
    }
    return table, summary


def require_best(summary: Mapping[str, Any], where: str = "the parent run's sweep/trials.csv") -> dict[str, Any]:
    """The best trial of the summary, or a SparsetrainError saying why there is none."""
    if summary["best"] is None:
        if summary["max_density"] is not None:
            raise SparsetrainError(
                f"sweep.max_density: no completed trial of study '{summary['study_name']}' has a density "
                f"<= {summary['max_density']:g}; raise it, or sweep sparser settings (see {where})"
            )
        raise SparsetrainError(
            f"sweep: no trial of study '{summary['study_name']}' completed; see the fail_reason column of {where}"
        )
    return summary["best"]


# ------------------------------------------------------------------------------- run files


def _run_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The sections a trial set, as ``kedro run --config`` takes them (data and registry are
    the run's own)."""
    # training.verbose is the sweep's choice (quiet trials), not the trial's: the run keeps its own
    tree = unflatten({k: v for k, v in config.items() if k != "training.verbose"})
    return {section: tree[section] for section in ("compression", "model", "sparsity", "training") if section in tree}


def best_params(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The best trial's configuration as a ``kedro run --config`` file:
    ``kedro run --config data/08_reporting/runs/<run id>/sweep/best_params.yml`` trains it again."""
    best = require_best(summary)
    return {"run": {"params": _run_params(best["config"])}}


def pareto_set(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
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


def best_trial_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The parent run's metrics of the study: the best trial's validation metrics as
    ``best_<name>``, and the trial counts."""
    metrics = {
        "sweep_n_trials": float(summary["n_trials"]),
        "sweep_pareto_size": float(len(summary["pareto"])),
    }
    for state, count in summary["states"].items():
        metrics[f"sweep_n_{state.lower()}"] = float(count)
    if summary["best"] is not None:
        metrics["best_trial"] = float(summary["best"]["number"])
        metrics.update({f"best_{k}": float(v) for k, v in summary["best"]["metrics"].items()})
    return metrics


def best_run_tags(summary: Mapping[str, Any]) -> dict[str, str]:
    """Tags of the parent run naming the trial it refits, or none."""
    best = summary["best"]
    return {} if best is None else {"sweep_best_trial": str(best["number"]), "sweep_best_run_name": best["run_name"]}


def version_tags(summary: Mapping[str, Any]) -> dict[str, str]:
    """Tags of the registered version of the refit best model: the study (name and storage) and
    trial it came from; :func:`registered_identity` is the part that identifies it."""
    best = require_best(summary)
    return {
        "sweep_study": summary["study_name"],
        "sweep_storage": summary["storage"],
        "sweep_trial": str(best["number"]),
        f"sweep_{summary['objective']}": f"{best['value']:.6f}",
    }


def registered_identity(summary: Mapping[str, Any]) -> dict[str, str]:
    """The version tags that say "this trial of this study": a study registers each trial once."""
    tags = version_tags(summary)
    return {key: tags[key] for key in ("sweep_study", "sweep_storage", "sweep_trial")}


def write_reports(folder: Path, trials: pd.DataFrame, summary: Mapping[str, Any]) -> list[Path]:
    """Write the report files into ``folder`` (the parent run's own ``sweep/``); returns them.
    Without a best trial there is no ``best_params.yml``."""
    from sparsetrain.reporting import plt  # the project's Agg-backed pyplot

    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / TRIALS, folder / SUMMARY, folder / FRONTIER, folder / PARETO_SET]
    trials.to_csv(folder / TRIALS, index=False)
    (folder / SUMMARY).write_text(json.dumps(summary, indent=2))
    figure = plot_frontier(trials, summary)
    try:
        figure.savefig(folder / FRONTIER)
    finally:
        plt.close(figure)
    (folder / PARETO_SET).write_text(yaml.safe_dump(pareto_set(summary), default_flow_style=False, sort_keys=False))
    if summary["best"] is not None:
        (folder / BEST_PARAMS).write_text(yaml.safe_dump(best_params(summary), default_flow_style=False))
        written.append(folder / BEST_PARAMS)
    return written


# ------------------------------------------------------------------------------- progress


def log_progress(study: optuna.Study, trial: optuna.trial.FrozenTrial, cfg: SweepConfig) -> None:
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
        so_far = f"best #{best['number']} {cfg.objective}={best['value']:.4f} density={best['metrics']['density']:.3f}"
    logger.info("sweep trial %d %s | %s | %s", trial.number, params, outcome, so_far)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------- the frontier


def plot_frontier(trials: pd.DataFrame, summary: Mapping[str, Any]) -> Figure:
    """Objective against density for every completed trial, one colour per penalty; the
    Pareto front is ringed and joined, the best trial starred."""
    from sparsetrain.reporting import plt  # the project's Agg-backed pyplot

    objective = summary["objective"]
    done = trials[trials["state"] == "COMPLETE"] if len(trials) else trials
    fig, ax = plt.subplots(figsize=(7, 5))
    if len(done):
        penalties = _penalty_column(done, summary)
        for penalty in sorted(penalties.dropna().unique(), key=_penalty_order):
            part = done[penalties == penalty]
            ax.scatter(part["density"], part[objective], s=36, alpha=0.8,
                       color=f"C{_penalty_order(penalty)}", label=str(penalty))
        front = done[done["pareto"].astype(bool)].sort_values("density")
        if len(front):
            ax.scatter(front["density"], front[objective], s=140, facecolors="none", edgecolors="black",
                       linewidths=1.5, label="Pareto front")
            ax.step(front["density"], front[objective], where="post", color="black", linewidth=0.8, alpha=0.6)
        best = done[done["best"].astype(bool)]
        if len(best):
            ax.scatter(best["density"], best[objective], marker="*", s=260, color="gold", edgecolors="black",
                       zorder=5, label=f"best (#{int(best['number'].iloc[0])})")
    if summary.get("max_density") is not None:
        ax.axvline(summary["max_density"], color="grey", linestyle="--", linewidth=1, label="max_density")
    ax.set_xlabel("density (fraction of nonzero prunable weights)")
    ax.set_ylabel(f"{objective} (validation split)")
    failed = int((trials["state"] == "FAIL").sum()) if len(trials) else 0
    ax.set_title(f"sweep '{summary['study_name']}': {len(done)} trials" + (f", {failed} failed" if failed else ""))
    ax.grid(alpha=0.3)
    if len(done):
        ax.legend(loc="best", fontsize=8, title="sparsity.penalty")
    fig.tight_layout()
    return fig


def _penalty_order(penalty: str) -> int:
    """A fixed colour per penalty, the same in every sweep's plot."""
    order = ("none", "l1", "l2", "elasticnet", "group_lasso", "l0")
    return order.index(penalty) if penalty in order else len(order)


def _penalty_column(done: pd.DataFrame, summary: Mapping[str, Any]) -> pd.Series:
    if "sparsity.penalty" in done:
        return done["sparsity.penalty"]
    penalty = (summary["best"] or {}).get("config", {}).get("sparsity.penalty", "fixed")
    return pd.Series([penalty] * len(done), index=done.index)
