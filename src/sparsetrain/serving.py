"""The served model: an MLflow pyfunc over :class:`RawFeaturePredictor` (raw rows in), and what a
serving environment needs to load it.

Outside ``pipelines/`` on purpose: loading a registered model imports this module, and a serving
environment should not need Kedro. The model carries sparsetrain's own code (``code_paths``) and
pins the packages that code imports (:func:`pip_requirements`), so it loads where sparsetrain is
not installed. Listing them also spares ``log_model`` its requirement inference, which loads the
model in a subprocess (``log_model`` took 16.8 s with it, 2.1 s without, on a 2-core CPU) and
which, for this model, missed torch and listed sparsetrain, a package no index serves.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import mlflow

from sparsetrain.core.predictor import RawFeaturePredictor

# Distributions that sparsetrain.core.predictor imports, directly or through core.data / config.
SERVING_DISTRIBUTIONS = ("torch", "numpy", "scikit-learn", "scipy", "pandas", "pydantic", "cloudpickle")


class SparsetrainModel(mlflow.pyfunc.PythonModel):
    """Standardizer + reducer + sparse network in one model; predicts from raw feature rows."""

    def __init__(self, predictor: RawFeaturePredictor) -> None:
        self.predictor = predictor

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads type hints as a schema
        return self.predictor.predict(model_input)


def pip_requirements() -> list[str]:
    """The serving distributions pinned at the versions installed here (a local build label such as
    ``+cpu`` dropped, so that a CUDA build of the same torch release satisfies it)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in SERVING_DISTRIBUTIONS]


def code_paths() -> list[str]:
    """sparsetrain's package folder, copied into the model so that it loads without an install."""
    return [str(Path(__file__).resolve().parent)]
