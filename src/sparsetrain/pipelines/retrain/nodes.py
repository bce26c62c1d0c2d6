"""Retrain: a challenger trained on the data as it is now, judged against the registered champion
on the same fresh test split, promoted only when the rule of :mod:`sparsetrain.promotion` says so.

`pipeline_registry` wraps these nodes around the stage pipelines (ingestion's split and
standardization, compression, training, evaluation), which it feeds the challenger's sections.
The order inside the run: the challenger's recipe and parameters are logged first; its
evaluation, the champion's score and the decision (tag ``retrain_decision``, metrics
``champion_<metric>`` / ``challenger_<metric>``) before registration; then the version is created
(run FINISHED, decision in its tags), ``retrain/decision.json`` names the versions, and the alias
moves come last. The project hook holds the model's retrain lock for the whole run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from sparsetrain import tracking
from sparsetrain.config import (
    DataConfig,
    RegistryConfig,
    RetrainConfig,
    SparsetrainConfig,
    is_minimized,
    parse_section,
)
from sparsetrain.core.data import Dataset, DatasetInfo, Splits, Standardizer, load_source_data
from sparsetrain.core.metrics import task_metrics
from sparsetrain.errors import SparsetrainError
from sparsetrain.promotion import Rule, decide, promotes
from sparsetrain.scoring import degenerate_reason
from sparsetrain.serving import build_predictor, input_example

logger = logging.getLogger(__name__)

RECIPE_SECTIONS = ("compression", "model", "sparsity", "training")  # what params: champion reuses
DECISION_FILE = "decision.json"


def load_current_data(
    data: DataConfig,
    retrain: RetrainConfig,
    raw_table: pd.DataFrame | None,
    raw_batches: Mapping[str, Callable[[], pd.DataFrame]],
) -> tuple[Dataset, dict[str, Any]]:
    """The data as it is now (the last ``retrain.window`` batches, or all), and its window:
    source, batches used, rows, fingerprint; tagged on the run."""
    dataset, window = load_source_data(data, raw_table, raw_batches, retrain.window)
    tags = {"data_rows": str(window["rows"]), "data_fingerprint": window["fingerprint"]}
    if "batches" in window:
        batches = window["batches"]
        tags["data_window"] = f"{batches[0]}..{batches[-1]} ({len(batches)} batches)"
    tracking.set_run_tags(tracking.active_run_id(), tags)
    logger.info("retrain data: %s rows, fingerprint %s", window["rows"], window["fingerprint"][:12])
    return dataset, window


def champion_recipe(current: SparsetrainConfig, stored: Mapping[str, Any], version: str) -> SparsetrainConfig:
    """The current data and registry sections with the champion's recipe (its compression, model,
    sparsity and training sections, from its ``run_config.json``)."""
    try:
        sections = {name: parse_section(name, stored.get(name)) for name in RECIPE_SECTIONS}
        return SparsetrainConfig(data=current.data, registry=current.registry, **sections)
    except (SparsetrainError, ValueError) as error:
        raise SparsetrainError(
            f"the champion's recipe (version {version}, run_config.json) does not fit the current "
            f"parameters: {str(error).splitlines()[0]}; set retrain.params=configured"
        ) from None


def resolve_challenger(
    run: SparsetrainConfig, retrain: RetrainConfig
) -> tuple[SparsetrainConfig, Any, Any, Any, Any, dict[str, Any]]:
    """The challenger's configuration: the champion's recipe (``retrain.params: champion``, when
    there is a champion) or the configured one; logged as this run's parameters. Returns it, its
    four recipe sections for the stage pipelines, and the champion it is judged against."""
    name = run.registry.name_for(run.data.task)
    champion = tracking.alias_version(name, tracking.CHAMPION)
    cfg, recipe = run, "configured"
    if retrain.params == "champion" and champion is not None:
        stored = tracking.run_config_of(champion.run_id)
        if stored is None:
            raise SparsetrainError(
                f"the champion of '{name}' (version {champion.version}) has no run_config.json to retrain "
                "from; set retrain.params=configured"
            )
        cfg, recipe = champion_recipe(run, stored, str(champion.version)), f"champion v{champion.version}"
    run_id = tracking.active_run_id()
    tracking.log_params({**cfg.flat(), **{f"retrain.{k}": v for k, v in retrain.model_dump().items()}})
    tracking.set_run_tags(
        run_id,
        {"mlflow.runName": f"retrain-{tracking.run_name(cfg)}", "retrain_model": name,
         "retrain_recipe": recipe},
    )
    logger.info(
        "retrain '%s': champion %s, challenger recipe %s",
        name, f"v{champion.version}" if champion else "none yet", recipe,
    )
    ref = {
        "name": name,
        "version": str(champion.version) if champion else None,
        "run_id": champion.run_id if champion else None,
    }
    return cfg, cfg.compression, cfg.model, cfg.sparsity, cfg.training, ref


def raw_rows(X: np.ndarray, info: DatasetInfo) -> Any:
    """Rows as users send them to the served model: a named frame for tables, a matrix for arrays."""
    X = np.asarray(X, dtype=np.float64)
    return pd.DataFrame(X, columns=list(info.feature_names)) if info.target is not None else X


def label_ids(predicted: Any, info: DatasetInfo) -> np.ndarray:
    """Served labels back to class ids (a label the data does not have counts as wrong)."""
    predicted = np.asarray(predicted).ravel()
    if info.task == "regression":
        return predicted.astype(np.float64)
    if info.class_names:
        index = {str(name): i for i, name in enumerate(info.class_names)}
        return np.array([index.get(str(label), -1) for label in predicted], dtype=np.int64)
    return predicted.astype(np.int64)


def score_champion(
    champion_ref: dict[str, Any], raw_splits: Splits, dataset_info: DatasetInfo
) -> dict[str, Any]:
    """The champion's test metrics on this run's test split, loaded from the registry exactly as
    users load it (``models:/<name>@champion``) and fed the raw test rows."""
    scores: dict[str, Any] = {"version": champion_ref["version"], "metrics": {}, "error": None}
    if champion_ref["version"] is None:
        return scores
    import mlflow

    uri = f"models:/{champion_ref['name']}@{tracking.CHAMPION}"
    try:
        predicted = mlflow.pyfunc.load_model(uri).predict(raw_rows(raw_splits.X_test, dataset_info))
        scores["metrics"] = task_metrics(
            dataset_info.task, raw_splits.y_test, label_ids(predicted, dataset_info), "test"
        )
    except Exception as error:  # noqa: BLE001 - any failure to serve these rows is the champion's
        scores["error"] = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        logger.warning("the champion (%s) cannot score the current data: %s", uri, scores["error"])
    return scores


def decide_promotion(
    run_report: dict[str, Any],
    champion_scores: dict[str, Any],
    champion_ref: dict[str, Any],
    data_window: dict[str, Any],
    retrain: RetrainConfig,
    registry: RegistryConfig,
    dataset_info: DatasetInfo,
) -> dict[str, Any]:
    """Judge the challenger (:func:`sparsetrain.promotion.decide`) and record the decision on the
    run: tag ``retrain_decision``, metrics ``champion_<metric>`` and ``challenger_<metric>``."""
    metric, metrics = retrain.metric, run_report["metrics"]
    rule = Rule(metric, is_minimized(metric), retrain.min_delta, retrain.max_density)
    refusal = None if registry.allow_degenerate else degenerate_reason(metrics, dataset_info.task)
    champion_score = champion_scores["metrics"].get(metric)
    decision = decide(
        rule, metrics, tuple(metrics), champion_ref["version"] is not None, champion_score,
        champion_scores["error"], refusal,
    )
    run_id = run_report["run_id"]
    scores = {
        f"champion_{metric}": decision.champion_score, f"challenger_{metric}": decision.challenger_score
    }
    tracking.log_metrics(run_id, {k: v for k, v in scores.items() if v is not None})
    tracking.set_run_tags(
        run_id, {"retrain_decision": decision.outcome, "retrain_reason": decision.reason[:500]}
    )
    logger.info("retrain decision: %s (%s)", decision.outcome, decision.reason)
    return {
        "decision": decision.outcome,
        "reason": decision.reason,
        "model_name": champion_ref["name"],
        "rule": asdict(rule),
        "champion": {"version": champion_ref["version"], "run_id": champion_ref["run_id"], **scores_of(
            champion_scores["metrics"], metric), "error": champion_scores["error"]},
        "challenger": {"version": None, "run_id": run_id, "density": metrics.get("density"),
                       **scores_of(metrics, metric)},
        "data_window": data_window,
    }


def scores_of(metrics: Mapping[str, float], metric: str) -> dict[str, float | None]:
    value = metrics.get(metric)
    return {metric: None if value is None else float(value)}


def version_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """The decision as tags of the challenger's version: outcome, both scores, the champion."""
    metric = record["rule"]["metric"]
    tags = {"retrain_decision": record["decision"], "champion_version": str(record["champion"]["version"])}
    for side in ("champion", "challenger"):
        if record[side].get(metric) is not None:
            tags[f"{side}_{metric}"] = f"{record[side][metric]:.6f}"
    return tags


def register_challenger(
    standardizer: Standardizer,
    reducer: Any,
    network: nn.Module,
    dataset: Dataset,
    run_report: dict[str, Any],
    retrain_decision: dict[str, Any],
    challenger_run: SparsetrainConfig,
) -> dict[str, Any]:
    """The last node: register the challenger (unless it is degenerate) with the decision in its
    version tags, write ``retrain/decision.json`` with the versions, then move the aliases:
    ``challenger`` always, ``champion`` (and ``previous_champion``) only when it is promoted."""
    record = dict(retrain_decision)
    name = record["model_name"]
    published = tracking.publish_model(
        run_report, build_predictor(standardizer, reducer, network, dataset), input_example(dataset),
        dataset.task, challenger_run.registry, extra_tags=version_tags(record), config=challenger_run,
        move_aliases=False,
    )
    record["challenger"] = {**record["challenger"], "version": published.get("version")}
    run_id = run_report["run_id"]
    folder = tracking.run_folder(run_id) / "retrain"
    folder.mkdir(exist_ok=True)
    (folder / DECISION_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    tracking.log_folder(run_id, folder, artifact_path="retrain")
    if published["registered"]:
        promoted, version = promotes(record["decision"]), published["version"]
        tracking.move_aliases(name, version, run_id, promoted, (record["rule"]["metric"], "density"))
        stays = f"challenger; the champion stays version {record['champion']['version']}"
        logger.info("'%s' version %s is the %s", name, version, "champion" if promoted else stays)
    return record
