"""The served model: MLflow "models from code" (:mod:`sparsetrain.served_model`) over the sparse
safetensors export, with the preprocessing as tensors and a JSON spec (no pickle anywhere), and
what a serving environment needs to load it.

Outside ``pipelines/`` on purpose: loading a registered model imports this package, and a serving
environment should not need Kedro. The model carries sparsetrain's own code (``code_paths``) and
pins the packages that code imports (:func:`pip_requirements`), so it loads where sparsetrain is
not installed. Listing them also spares ``log_model`` its requirement inference, which loads the
model in a subprocess (``log_model`` took 16.8 s with it, 2.1 s without, on a 2-core CPU) and
which, for this model, missed torch and listed sparsetrain, a package no index serves.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from torch import nn

from sparsetrain.core.data import Dataset, Standardizer
from sparsetrain.core.export import save_sparse
from sparsetrain.core.predictor import OUTPUTS, RawFeaturePredictor, save_served

# Distributions that the served model's code imports (sparsetrain.served_model, core.predictor,
# core.export and what they import); pyarrow, under pandas, needs no cloudpickle.
SERVING_DISTRIBUTIONS = ("torch", "numpy", "scikit-learn", "scipy", "pandas", "safetensors", "mlflow")
SERVED_MODEL_CODE = Path(__file__).resolve().with_name("served_model.py")


def pip_requirements() -> list[str]:
    """The serving distributions pinned at the versions installed here (a local build label such as
    ``+cpu`` dropped, so that a CUDA build of the same torch release satisfies it)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in SERVING_DISTRIBUTIONS]


def code_paths() -> list[str]:
    """sparsetrain's package folder, copied into the model so that it loads without an install."""
    return [str(Path(__file__).resolve().parent)]


def build_predictor(standardizer: Standardizer, reducer: Any, network: nn.Module, dataset: Dataset) -> RawFeaturePredictor:
    """The in-process predictor of a trained network: what the served model is checked against."""
    return RawFeaturePredictor(
        standardizer=standardizer,
        reducer=reducer,
        network=network.to("cpu").eval(),
        task=dataset.task,
        feature_names=tuple(dataset.feature_names),
        # Tables may carry string labels: serve those; image sets serve class ids.
        class_names=dataset.class_names if dataset.target is not None else None,
        by_name=dataset.target is not None,  # array sources: frame columns by position
    )


def input_example(dataset: Dataset, rows: int = 5) -> Any:
    """Raw rows as users send them: a named frame for tables (a column signature: JSON and CSV
    requests), a float64 matrix for arrays. The matrix gives a tensor signature, which takes numpy
    rows in-process and ``{"inputs": rows}`` over HTTP (0.4 ms to parse 784 columns, against 55 ms
    for a ``dataframe_split``, which MLflow casts column by column); MLflow 3.17's server refuses
    CSV for a tensor signature (it asks the schema for pandas types), but a column signature would
    refuse numpy rows in ``pyfunc.predict``."""
    X = dataset.X[:rows].astype(np.float64)
    if dataset.target is not None:
        return pd.DataFrame(X, columns=list(dataset.feature_names))
    return X


def signature(predictor: RawFeaturePredictor, example: Any):
    """Inputs from the example, outputs the labels, and the ``output`` parameter (labels or
    probabilities) that requests may set."""
    return infer_signature(example, predictor.predict(example), params={"output": OUTPUTS[0]})


def log_served_model(
    predictor: RawFeaturePredictor, example: Any, weights: Path | None = None, policy: str = "auto"
) -> str:
    """Log the served model to the active run, with its signature and input example, without
    registering it (registration is a separate, last step); returns the model's URI. ``weights``:
    the sparse export of ``predictor.network`` (written here when None); ``policy``: ``auto``
    (dense or CSR kernels per request, see :mod:`sparsetrain.core.predictor`), ``dense`` or
    ``sparse``."""
    with tempfile.TemporaryDirectory() as tmp:
        if weights is None:
            weights = Path(tmp) / "model.sparse.safetensors"
            save_sparse(predictor.network, weights)
        files = save_served(predictor, tmp, policy)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVED_MODEL_CODE),
            artifacts={"weights": str(weights), **{role: str(path) for role, path in files.items()}},
            signature=signature(predictor, example),
            input_example=example,
            pip_requirements=pip_requirements(),
            code_paths=code_paths(),
        )
    return info.model_uri
