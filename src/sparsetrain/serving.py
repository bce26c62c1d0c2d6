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
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from torch import nn

from sparsetrain.core.data import Dataset, Standardizer
from sparsetrain.core.predictor import RawFeaturePredictor

# Distributions that sparsetrain.core.predictor imports, directly or through core.data / config.
SERVING_DISTRIBUTIONS = ("torch", "numpy", "scikit-learn", "scipy", "pandas", "pydantic", "cloudpickle")


class SparsetrainModel(mlflow.pyfunc.PythonModel):
    """Standardizer + reducer + sparse network in one model; predicts from raw feature rows."""

    def __init__(self, predictor: RawFeaturePredictor) -> None:
        self.predictor = predictor

    # The signature comes from the input example. A DataFrame hint is one MLflow documents as
    # "no schema inferred from it", so it neither wraps predict in its own validation nor warns;
    # rows arrive as a frame (tables) or a matrix (arrays), and the predictor takes both.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.predictor.predict(model_input)


def pip_requirements() -> list[str]:
    """The serving distributions pinned at the versions installed here (a local build label such as
    ``+cpu`` dropped, so that a CUDA build of the same torch release satisfies it)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in SERVING_DISTRIBUTIONS]


def code_paths() -> list[str]:
    """sparsetrain's package folder, copied into the model so that it loads without an install."""
    return [str(Path(__file__).resolve().parent)]


def build_predictor(standardizer: Standardizer, reducer: Any, network: nn.Module, dataset: Dataset) -> RawFeaturePredictor:
    return RawFeaturePredictor(
        standardizer=standardizer,
        reducer=reducer,
        network=network.to("cpu").eval(),
        task=dataset.task,
        feature_names=tuple(dataset.feature_names),
        # Tables may carry string labels: serve those; image sets serve class ids.
        class_names=dataset.class_names if dataset.target is not None else None,
    )


def input_example(dataset: Dataset, rows: int = 5) -> Any:
    """Raw rows as users send them: a named frame for tables, a float64 matrix for arrays."""
    X = dataset.X[:rows].astype(np.float64)
    if dataset.target is not None:
        return pd.DataFrame(X, columns=list(dataset.feature_names))
    return X


def log_served_model(predictor: RawFeaturePredictor, example: Any, weights: Path | None = None) -> str:
    """Log the pyfunc to the active run, with its signature and input example, without
    registering it (registration is a separate, last step); returns the model's URI."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=SparsetrainModel(predictor),
        signature=infer_signature(example, predictor.predict(example)),
        input_example=example,
        pip_requirements=pip_requirements(),
        code_paths=code_paths(),
    )
    return info.model_uri
