"""Kedro settings of the project."""

from omegaconf.resolvers import oc

from sparsetrain.config_loader import SparsetrainConfigLoader
from sparsetrain.hooks import RunConfigHook, RunRecordHook
from sparsetrain.logs import ignore_library_warnings, quiet_defaults

_CONFIG = RunConfigHook()
HOOKS = (_CONFIG, RunRecordHook(_CONFIG))

CONFIG_LOADER_CLASS = SparsetrainConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # oc.env in mlflow.yml lets MLFLOW_TRACKING_URI override the embedded SQLite store.
    "custom_resolvers": {"oc.env": oc.env},
}

ignore_library_warnings()
quiet_defaults()
