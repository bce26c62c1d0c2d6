"""The registered model's code, logged as MLflow "models from code": MLflow copies this file into
the model and runs it at load time, so nothing of the model is pickled. What it serves comes from
the model's artifacts (see :func:`sparsetrain.core.predictor.load_served`): the sparse safetensors
export (``weights``), the standardizer and reducer as tensors (``preprocessing``) and a JSON spec
(``spec``: task, column and class names, inference policy).

Bad rows raise ``ValueError`` in the predictor (one line naming the column); here they become an
``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which ``mlflow models serve`` answers with
HTTP 400 and the message, instead of the 400 with a generic text it gives for other exceptions.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from sparsetrain.core.predictor import load_served


class SparsetrainServedModel(PythonModel):
    """Raw rows in; labels (``params={"output": "labels"}``, the default) or class probabilities
    (``{"output": "probabilities"}``, one column per class) out."""

    def load_context(self, context) -> None:
        artifacts = context.artifacts
        self.predictor = load_served(artifacts["weights"], artifacts["preprocessing"], artifacts["spec"])

    # A DataFrame hint is one MLflow documents as "no schema inferred from it": the logged signature
    # stays the one inferred from the input example, and MLflow neither wraps predict nor warns.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        try:
            return self.predictor.serve(model_input, (params or {}).get("output", "labels"))
        except ValueError as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None


mlflow.models.set_model(SparsetrainServedModel())
