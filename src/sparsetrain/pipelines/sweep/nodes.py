"""Sweep nodes: the Kedro adapters of :mod:`.study` (the Optuna study), :mod:`.trial` (one trial,
the refit) and :mod:`.report` (the study's report).

The parent run is the one kedro-mlflow opens; each trial is a run nested under it. Everything the
parent run keeps is written into its own folder (:func:`sparsetrain.tracking.run_folder`) and
logged from there, so that workers sharing one project folder never log each other's files; only
the Optuna storage is shared, by design. Registration is the last node.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from sparsetrain import tracking
from sparsetrain.config import SparsetrainConfig, SweepConfig
from sparsetrain.core.data import Dataset, DatasetInfo, Splits, Standardizer
from sparsetrain.scoring import evaluate_network
from sparsetrain.serving import build_predictor, input_example

from . import report
from . import study as studies
from . import trial as trials

logger = logging.getLogger(__name__)


def _parent_run() -> mlflow.entities.Run:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: start the sweep with `kedro run --pipelines sweep`")
    return run


def run_sweep(
    model_input: Splits,
    standardized_splits: Splits,
    dataset_info: DatasetInfo,
    run: SparsetrainConfig,
    sweep: SweepConfig,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run ``sweep.n_trials`` more trials of the study (or until ``sweep.timeout_s``), each a run
    nested under this one, then describe the whole study: the trials table and the summary."""
    parent = _parent_run()
    url = studies.storage_url(sweep)
    study, storage = studies.open_study(sweep, on_stale=trials.close_killed_runs)
    tracking.set_run_tags(
        parent.info.run_id,
        {"sweep_study": sweep.study_name, "sweep_role": "parent", "sweep_storage": studies.safe_url(url)},
    )
    studies.fail_stale_trials(study, storage, 2 * sweep.heartbeat_s, trials.close_killed_runs)
    before = len(study.trials)
    logger.info(
        "sweep '%s' (%s, %s sampler): %d trials so far, running %s more%s",
        sweep.study_name, studies.safe_url(url), sweep.sampler, before, sweep.n_trials or "unlimited",
        f" for at most {sweep.timeout_s:g} s" if sweep.timeout_s else "",
    )
    runner = trials.TrialRunner(
        sweep, run, trials.TrialData(model_input, standardized_splits, dataset_info), storage, parent
    )
    studies.run_trials(
        study, storage, runner, sweep, trials.close_killed_runs, partial(report.log_progress, cfg=sweep)
    )
    return report.summarize(studies.trial_records(study), sweep, studies.safe_url(url), before)


def report_sweep(sweep_trials: pd.DataFrame, sweep_summary: dict[str, Any]) -> dict[str, Any]:
    """Write the study's report into this run's own folder (``<run folder>/sweep/``), log it under
    the artifact path ``sweep/``, and log the best trial's metrics and tags to this run."""
    run_id = tracking.active_run_id()
    folder = tracking.run_folder(run_id) / report.ARTIFACT_PATH
    files = report.write_reports(folder, sweep_trials, sweep_summary)
    tracking.log_folder(run_id, folder, artifact_path=report.ARTIFACT_PATH)
    tracking.log_metrics(run_id, report.best_trial_metrics(sweep_summary))
    tags = report.best_run_tags(sweep_summary)
    if tags:
        tracking.set_run_tags(run_id, tags)
    return {"run_id": run_id, "folder": str(folder), "files": [path.name for path in files]}


def register_sweep_best(
    sweep_summary: dict[str, Any],
    sweep_report: dict[str, Any],
    standardizer: Standardizer,
    dataset: Dataset,
    dataset_info: DatasetInfo,
    standardized_splits: Splits,
    model_input: Splits,
    reducer: Any,
    run: SparsetrainConfig,
) -> dict[str, Any]:
    """The last node: refit the best trial on train + validation, score it once on the test split,
    log those metrics to this run, then register it (:func:`sparsetrain.tracking.publish_model`),
    tagged with the study and trial it came from. Takes ``sweep_report`` so that it runs after
    every other file and metric of the run is logged.

    Once per study and trial: a resumed sweep, or a second worker, whose best trial is already
    registered adds no version (checked under a host lock, and again after registering, when a
    worker on another host raced this one: the later version is deleted)."""
    best = report.require_best(sweep_summary, f"sweep/trials.csv ({sweep_report['folder']}/{report.TRIALS})")
    name, identity = run.registry.name_for(dataset_info.task), report.registered_identity(sweep_summary)
    run_id = tracking.active_run_id()
    with tracking.registration_lock(name):
        existing = tracking.versions_tagged(name, identity)
        if existing:
            version = str(existing[0].version)
            logger.info(
                "sweep: trial %d is already registered as '%s' version %s", best["number"], name, version
            )
            tracking.set_run_tags(run_id, {"registration": f"already registered as version {version}"})
            return {"registered": False, "name": name, "version": version, "run_id": run_id, **identity}
        network, reducer, refit, history = trials.refit_best(
            sweep_summary, standardized_splits, model_input, reducer, dataset_info, run
        )
        metrics = evaluate_network(network, refit, dataset_info, history)
        run_report = tracking.log_evaluation(run_id, metrics, history, dataset_info.task)
        MlflowClient().log_artifact(run_id, str(tracking.run_folder(run_id) / "metrics.json"))
        published = tracking.publish_model(
            run_report,
            build_predictor(standardizer, reducer, network, dataset),
            input_example(dataset),
            dataset_info.task,
            run.registry,
            extra_tags=report.version_tags(sweep_summary),
            config=trials.refit_config(best, run),
        )
    return _drop_if_raced(published, name, identity)


def _drop_if_raced(published: dict[str, Any], name: str, identity: dict[str, str]) -> dict[str, Any]:
    """A worker on another host may have registered the same trial meanwhile: the oldest version
    stays, a later one of this run is deleted."""
    if not published.get("registered"):
        return published
    oldest = str(tracking.versions_tagged(name, identity)[0].version)
    if oldest != published["version"]:
        MlflowClient().delete_model_version(name, published["version"])
        logger.info("sweep: another worker registered this trial first (version %s); dropped ours", oldest)
        return {**published, "registered": False, "version": oldest}
    return published
