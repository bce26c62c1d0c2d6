"""Registry: log the raw-rows model to the run's MLflow model and register a new version.

Runs last, after evaluation succeeded: a model logged with ``registered_model_name`` is registered
at once, so registering earlier could leave a version behind for a run that then failed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from torch import nn

from sparsetrain.config import parse_section
from sparsetrain.core.data import Dataset, Standardizer
from sparsetrain.core.export import save_sparse
from sparsetrain.core.metrics import primary_metric
from sparsetrain.core.predictor import RawFeaturePredictor
from sparsetrain.errors import SparsetrainError

CHAMPION, CHALLENGER = "champion", "challenger"


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


def register_model(
    standardizer: Standardizer,
    reducer: Any,
    network: nn.Module,
    dataset: Dataset,
    evaluation_metrics: dict[str, float],
    registry: dict[str, Any],
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Log the pyfunc model and the sparse safetensors export to the active run, register a
    version tagged with its density and test metric, alias it ``challenger`` (and ``champion``
    when the name has none yet)."""
    cfg = parse_section("registry", registry)
    run = mlflow.active_run()
    if run is None:
        raise SparsetrainError("the registry pipeline needs an active MLflow run: start it with `kedro run`")
    from sparsetrain.serving import SparsetrainModel, code_paths, pip_requirements  # MLflow warns at import

    predictor = build_predictor(standardizer, reducer, network, dataset)
    example = input_example(dataset)
    signature = infer_signature(example, predictor.predict(example))
    with tempfile.TemporaryDirectory() as folder:
        sparse_file = Path(folder) / "model.sparse.safetensors"
        save_sparse(network, sparse_file)
        mlflow.log_artifact(str(sparse_file), artifact_path="sparse_export")
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=SparsetrainModel(predictor),
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(),
        code_paths=code_paths(),
        registered_model_name=cfg.model_name,
    )
    version = str(info.registered_model_version)
    metric_name = primary_metric(dataset.task)
    client = MlflowClient()
    version_tags = {
        "density": f"{evaluation_metrics['density']:.6f}",
        metric_name: f"{evaluation_metrics[metric_name]:.6f}",
        "run_id": run.info.run_id,
        **(tags or {}),
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(cfg.model_name, version, key, value)
    client.set_registered_model_alias(cfg.model_name, CHALLENGER, version)
    if CHAMPION not in client.get_registered_model(cfg.model_name).aliases:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, version)
    return {"name": cfg.model_name, "version": version, "run_id": run.info.run_id, **version_tags}
