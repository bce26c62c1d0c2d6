"""One object that maps RAW feature rows to predictions: standardizer + reducer + network.

This is what the registry serves, so that a user never has to repeat the preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsetrain.core.compression import transform as reduce
from sparsetrain.core.data import Standardizer


@dataclass
class RawFeaturePredictor:
    standardizer: Standardizer
    reducer: Any  # fitted scikit-learn transformer, or None
    network: nn.Module
    task: str
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...] | None = None

    def features(self, X: Any) -> np.ndarray:
        """Raw rows (array or DataFrame with the training columns) -> network inputs."""
        if hasattr(X, "columns"):
            missing = [c for c in self.feature_names if c not in X.columns]
            if missing:
                raise ValueError(f"input lacks feature columns {missing[:5]}")
            X = X[list(self.feature_names)]
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"expected rows of {len(self.feature_names)} features, got shape {X.shape}")
        X = self.standardizer.transform(X)
        return X if self.reducer is None else reduce(self.reducer, X)

    def raw_output(self, X: Any) -> np.ndarray:
        self.network.eval()
        with torch.inference_mode():
            out = self.network(torch.from_numpy(self.features(X)))
        return out.numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task != "classification":
            raise ValueError("predict_proba needs a classifier")
        return torch.softmax(torch.from_numpy(self.raw_output(X)), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (original names when the labels were strings) or regression values."""
        out = self.raw_output(X)
        if self.task == "regression":
            return out.squeeze(-1)
        ids = out.argmax(axis=1)
        return np.asarray(self.class_names, dtype=object)[ids] if self.class_names else ids
