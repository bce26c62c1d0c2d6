"""Project hooks: validate every parameter before any node runs."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl

from sparsetrain.config import parse_config, parse_sweep, parse_sweep_section


class ValidateParametersHook:
    """Fail at start-up, with one line naming the key, before a run or a version is created."""

    @hook_impl
    def after_context_created(self, context) -> None:
        params = context.config_loader["parameters"]
        parse_config(params)
        if "sweep" in params:  # conf/base/parameters_sweep.yml: its own keys, whatever runs
            parse_sweep_section(params["sweep"])

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens the run
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name")]
        if "sweep" in names:
            # The space against the other parameters (e.g. the objective against data.task):
            # only when sweeping, so that `kedro run --params data.task=regression` still runs.
            parse_sweep(catalog.load("parameters"))
