"""Kedro settings of the project."""

import warnings

from omegaconf.resolvers import oc

from sparsetrain.config_loader import SparsetrainConfigLoader
from sparsetrain.hooks import RunConfigHook, RunRecordHook
from sparsetrain.logs import quiet_defaults

_CONFIG = RunConfigHook()
HOOKS = (_CONFIG, RunRecordHook(_CONFIG))

CONFIG_LOADER_CLASS = SparsetrainConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # oc.env in mlflow.yml lets MLFLOW_TRACKING_URI override the embedded SQLite store.
    "custom_resolvers": {"oc.env": oc.env},
}

# Deprecations inside Kedro, kedro-mlflow and MLflow that this project cannot act on; a clean
# `kedro run` prints no warning. Anything else still shows.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)
quiet_defaults()
