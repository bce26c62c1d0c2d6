"""Study nodes: train every setting of every claim over the seeds (each measurement a run nested
under this one), then judge the claims and write the report (:mod:`.report`).

The report goes into this run's own folder (``<run folder>/study/``), is logged under the
artifact path ``study/``, and is copied to ``data/08_reporting/study/`` (the latest study, where
README points). ``study.summarize_only`` rebuilds it from the measurements of the latest study
that trained, without training.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from sparsetrain import tracking
from sparsetrain.config import StudyConfig
from sparsetrain.errors import SparsetrainError

from . import design, report, runner

logger = logging.getLogger(__name__)

LATEST = Path("data/08_reporting/study")
TRAINED = "trained"  # study_role of a study run that measured (summarize_only reads the latest)


def _record(dataset: str, setting: str, seed: int, metrics: dict[str, float]) -> dict[str, Any]:
    return {"dataset": dataset, "setting": setting, "seed": seed, **metrics}


def _measure_all(study: StudyConfig, parent: str) -> tuple[pd.DataFrame, list[str]]:
    preset = design.preset_of(study)
    has_fashion = runner.fashion_available()
    skipped = [] if has_fashion or "fashion_mnist" not in design.datasets_of(study) else [
        "fashion_mnist (its IDX files are absent: apt-get install dataset-fashion-mnist)"
    ]
    work = design.plan(study, lambda name: name != "fashion_mnist" or has_fashion)
    seeds = design.seeds_of(study)
    total, done, measured = len(work) * len(seeds), 0, []
    for dataset, setting in work:
        for seed in seeds:
            result = runner.measure(setting, dataset, seed, preset)
            done += 1
            metrics = result["metrics"]
            tags = {"study_dataset": dataset, "study_setting": setting, "study_seed": str(seed)}
            curves = {"train_loss": [log.train_loss for log in result["logs"]]}
            name = f"{setting}-{dataset}-s{seed}"
            run_id = tracking.log_nested_run(parent, name, metrics, tags, histories=curves)
            measured.append({**result, "run_id": run_id, "dataset": dataset, "setting": setting,
                             "seed": seed})
            shown = metrics.get("test_accuracy", metrics.get("test_r2", float("nan")))
            logger.info("study [%d/%d] %s %s seed %d: test %.4f", done, total, dataset, setting, seed, shown)
    runner.add_equal_time_loss(measured)
    for m in measured:
        keys = ("val_loss_at_equal_time", "epochs_at_equal_time", "equal_time_seconds")
        extra = {k: m["metrics"][k] for k in keys if k in m["metrics"]}
        if extra:
            tracking.log_metrics(m["run_id"], extra)
    records = pd.DataFrame([_record(m["dataset"], m["setting"], m["seed"], m["metrics"]) for m in measured])
    return records, skipped


def _recorded(parent: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The measurements of the latest study that trained, read back from MLflow, and what that
    study was (its command and wall time)."""
    previous = tracking.latest_run_tagged("study_role", TRAINED, exclude=parent)
    if previous is None:
        raise SparsetrainError(
            "study.summarize_only: no finished study run with measurements in this MLflow experiment; "
            "run `kedro run --pipelines study` once without it"
        )
    rows = [
        _record(tags["study_dataset"], tags["study_setting"], int(tags["study_seed"]), dict(run.data.metrics))
        for run in tracking.child_runs(previous.info.run_id)
        for tags in [run.data.tags]
    ]
    logger.info("study: %d measurements read back from run %s", len(rows), previous.info.run_id)
    origin = {
        "command": previous.data.tags.get("study_command", "kedro run --pipelines study"),
        "wall_seconds": previous.data.metrics.get("study_wall_seconds", float("nan")),
        "rebuilt_from": previous.info.run_id,
    }
    return pd.DataFrame(rows), origin


def run_study(study: StudyConfig) -> dict[str, Any]:
    """Every measurement of the claims (or, ``summarize_only``, the latest recorded ones)."""
    started = time.perf_counter()
    parent = tracking.active_run_id()
    command = " ".join(["kedro", *sys.argv[1:]]) if sys.argv and "kedro" in sys.argv[0] else (
        f"kedro run --pipelines study --params study.preset={study.preset}"
    )
    tracking.set_run_tags(parent, {"mlflow.runName": f"study-{study.preset}", "study_preset": study.preset})
    if study.summarize_only:
        records, origin = _recorded(parent)
        return {"records": records, "skipped": [], **origin}
    records, skipped = _measure_all(study, parent)
    wall = time.perf_counter() - started
    tracking.log_metrics(parent, {"study_wall_seconds": wall})
    tracking.set_run_tags(parent, {"study_role": TRAINED, "study_command": command})
    return {"records": records, "skipped": skipped, "wall_seconds": wall, "command": command}


def report_study(study_results: dict[str, Any], study: StudyConfig) -> dict[str, Any]:
    """Judge the claims, write the report and its figures, log them; the verdicts as run tags."""
    run_id = tracking.active_run_id()
    records = study_results["records"]
    folder = tracking.run_folder(run_id) / "study"
    preset = design.preset_of(study)
    header = {
        "command": study_results["command"],
        "wall_seconds": study_results["wall_seconds"],
        "rebuilt_from": study_results.get("rebuilt_from"),
        "fashion_train_rows": preset.fashion_train_rows,
        "epochs": preset.epochs,
        "preset": study.preset,
        "seeds": int(records["seed"].nunique()) if len(records) else 0,
        "datasets": sorted(set(records["dataset"])) if len(records) else [],
        "runs": len(records),
    }
    header["datasets"] = [d for d in design.datasets_of(study) if d in header["datasets"]]
    verdicts = report.write_report(records, folder, header, study_results["skipped"])
    records.to_csv(folder / "measurements.csv", index=False)
    tracking.log_folder(run_id, folder, artifact_path="study")
    tags = {f"study_{claim}": "; ".join(f"{d}: {v}" for d, v in by_dataset.items())
            for claim, by_dataset in verdicts.items()}
    tracking.set_run_tags(run_id, tags)
    LATEST.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        shutil.copy2(path, LATEST / path.name)
    logger.info("study report: %s (and %s)", folder / report.REPORT, LATEST / report.REPORT)
    return {"run_id": run_id, "folder": str(folder), "verdicts": verdicts}
