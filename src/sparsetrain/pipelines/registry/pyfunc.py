"""The served model: an MLflow pyfunc over :class:`RawFeaturePredictor` (raw rows in)."""

from __future__ import annotations

import mlflow

from sparsetrain.core.predictor import RawFeaturePredictor


class SparsetrainModel(mlflow.pyfunc.PythonModel):
    """Standardizer + reducer + sparse network in one model; predicts from raw feature rows."""

    def __init__(self, predictor: RawFeaturePredictor) -> None:
        self.predictor = predictor

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads type hints as a schema
        return self.predictor.predict(model_input)
