"""Project hooks: parse the parameters once, hand the typed sections to the nodes, open the run record.

Nodes never see raw parameter dicts: they take ``config:<section>`` inputs (``config:data``,
``config:model``, ...), the frozen sections parsed here at start-up. A bad or unknown key fails
before the catalog, a run or a model version exists.
"""

from __future__ import annotations

import mlflow
from kedro.framework.hooks import hook_impl

from sparsetrain.config import (
    SECTIONS,
    SparsetrainConfig,
    SweepConfig,
    check_sweep,
    parse_config,
    parse_sweep_section,
)


def config_inputs(cfg: SparsetrainConfig, sweep: SweepConfig | None) -> dict[str, object]:
    """The catalog entries holding the typed sections, by dataset name."""
    inputs: dict[str, object] = {f"config:{name}": getattr(cfg, name) for name in SECTIONS}
    inputs["config:run"] = cfg
    if sweep is not None:
        inputs["config:sweep"] = sweep
    return inputs


class RunConfigHook:
    """Parse at start-up, fail with one line naming the key, put the sections into the catalog,
    and tag the MLflow run that kedro-mlflow opens with what and who runs it."""

    def __init__(self) -> None:
        self.config: SparsetrainConfig | None = None
        self.sweep: SweepConfig | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        params = context.config_loader["parameters"]
        self.config = parse_config(params)
        # conf/base/parameters_sweep.yml: its own keys are checked whatever runs
        self.sweep = parse_sweep_section(params["sweep"]) if "sweep" in params else None

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        for name, value in config_inputs(self.config, self.sweep).items():
            catalog[name] = value

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens the run
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name")]
        if "sweep" in names:
            # The space against the other parameters (e.g. the objective against data.task):
            # only when sweeping, so that `kedro run --params data.task=regression` still runs.
            check_sweep(self.sweep or parse_sweep_section(None), self.config)


class RunRecordHook:
    """After kedro-mlflow opened the run: mark runs of dead processes KILLED, then name, tag and
    parametrize this one (see :mod:`sparsetrain.tracking`)."""

    def __init__(self, config_hook: RunConfigHook) -> None:
        self._config_hook = config_hook

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        if mlflow.active_run() is not None:
            from sparsetrain.tracking import run_name, start_run_record

            names = run_params.get("pipeline_names") or [run_params.get("pipeline_name")]
            hook = self._config_hook
            sweeping = "sweep" in names and hook.sweep is not None
            start_run_record(hook.config, f"sweep-{hook.sweep.study_name}" if sweeping else run_name(hook.config))
