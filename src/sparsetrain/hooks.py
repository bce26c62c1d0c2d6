"""Project hooks: parse the parameters once, hand the typed sections to the nodes, open the run record.

Nodes never see raw parameter dicts: they take ``config:<section>`` inputs (``config:data``,
``config:model``, ...), the frozen sections parsed here at start-up. A bad or unknown key fails
before the catalog, a run or a model version exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

from sparsetrain.config import (
    SECTIONS,
    PathConfig,
    RetrainConfig,
    SparsetrainConfig,
    StudyConfig,
    SweepConfig,
    check_path,
    check_retrain,
    check_sweep,
    parse_config,
    parse_path_section,
    parse_retrain_section,
    parse_study_section,
    parse_sweep_section,
)
from sparsetrain.core.distributed import is_worker_rank
from sparsetrain.locks import ModelLock

# Pipelines that move the champion: one at a time per registered model (sparsetrain.locks).
CHAMPION_PIPELINES = ("retrain", "rollback")


def config_inputs(
    cfg: SparsetrainConfig,
    sweep: SweepConfig | None = None,
    retrain: RetrainConfig | None = None,
    path: PathConfig | None = None,
    study: StudyConfig | None = None,
) -> dict[str, object]:
    """The catalog entries holding the typed sections, by dataset name."""
    inputs: dict[str, object] = {f"config:{name}": getattr(cfg, name) for name in SECTIONS}
    inputs["config:run"] = cfg
    inputs["config:retrain"] = retrain or RetrainConfig()
    inputs["config:path"] = path or PathConfig()
    inputs["config:study"] = study or StudyConfig()
    if sweep is not None:
        inputs["config:sweep"] = sweep
    return inputs


def pipeline_names(run_params: dict) -> list[str]:
    return run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]


class RunConfigHook:
    """Parse at start-up, fail with one line naming the key, put the sections into the catalog,
    and tag the MLflow run that kedro-mlflow opens with what and who runs it."""

    def __init__(self) -> None:
        self.config: SparsetrainConfig | None = None
        self.sweep: SweepConfig | None = None
        self.retrain: RetrainConfig = RetrainConfig()
        self.path: PathConfig = PathConfig()
        self.study: StudyConfig = StudyConfig()
        self.lock: ModelLock | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        params = context.config_loader["parameters"]
        self.config = parse_config(params)
        # conf/base/parameters_sweep.yml: its own keys are checked whatever runs
        self.sweep = parse_sweep_section(params["sweep"]) if "sweep" in params else None
        self.retrain = parse_retrain_section(params.get("retrain"))
        self.path = parse_path_section(params.get("path"))
        self.study = parse_study_section(params.get("study"))

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        sections = config_inputs(self.config, self.sweep, self.retrain, self.path, self.study)
        for name, value in sections.items():
            catalog[name] = value

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens the run
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        names = pipeline_names(run_params)
        if "sweep" in names:
            # The space against the other parameters (e.g. the objective against data.task):
            # only when sweeping, so that `kedro run --params data.task=regression` still runs.
            check_sweep(self.sweep or parse_sweep_section(None), self.config)
        if "retrain" in names:
            check_retrain(self.retrain, self.config)
        if "path" in names:
            check_path(self.config)
        if set(names) & set(CHAMPION_PIPELINES):
            self._lock_champion()

    def _lock_champion(self) -> None:
        """Refuse at once, before a run exists, while a retrain or rollback of the model runs."""
        name = self.config.registry.name_for(self.config.data.task)
        lock = ModelLock("retrain", mlflow.get_tracking_uri(), name, label="retrain or rollback")
        self.lock = lock.acquire()

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


class RunRecordHook:
    """After kedro-mlflow opened the run: mark runs of dead processes KILLED, then name, tag and
    parametrize this one (see :mod:`sparsetrain.tracking`)."""

    def __init__(self, config_hook: RunConfigHook) -> None:
        self._config_hook = config_hook

    @hook_impl(tryfirst=True)  # before kedro-mlflow's get-then-create of the experiment
    def after_context_created(self, context) -> None:
        """Create the run's experiment here, tolerating the race of workers that start together
        on a new shared store (kedro-mlflow's own get-then-create fails all but one of them)."""
        from sparsetrain.tracking import ensure_experiment

        if is_worker_rank():  # torchrun's ranks other than 0 never open the store
            return

        loader = context.config_loader
        loader.config_patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
        try:
            conf = loader["mlflow"]
        except MissingConfigException:
            return
        uri = conf.get("server", {}).get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI", "")
        experiment = conf.get("tracking", {}).get("experiment", {})
        if "://" not in uri or not experiment.get("name"):
            return  # a local folder store: kedro-mlflow's default, nothing shared
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_absolute():
            uri = f"sqlite:///{context.project_path / uri.removeprefix('sqlite:///')}"  # as kedro-mlflow does
        location = (experiment.get("create_experiment_kwargs") or {}).get("artifact_location")
        if location and "://" not in location:
            location = (context.project_path / location).resolve().as_uri()
        ensure_experiment(uri, experiment["name"], location)

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        if mlflow.active_run() is None:
            return
        from sparsetrain.tracking import run_name, start_run_record

        names = pipeline_names(run_params)
        cfg, sweep = self._config_hook.config, self._config_hook.sweep
        if "retrain" in names:  # its node logs the challenger's configuration and name
            start_run_record(None, None)
        elif "rollback" in names:
            start_run_record(None, f"rollback-{cfg.registry.name_for(cfg.data.task)}")
        elif "sweep" in names and sweep is not None:
            start_run_record(cfg, f"sweep-{sweep.study_name}")
        elif "path" in names:  # the strength is the path's choice (metric path_chosen_strength)
            start_run_record(cfg, None, omit=("sparsity.strength",))
        else:
            start_run_record(cfg, run_name(cfg))
