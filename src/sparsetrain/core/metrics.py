"""What a trained model scores and what its sparsity buys: task metrics, nonzeros, bytes, speed.

Density counts the prunable weights (weight matrices and kernels); ``density_all`` counts every
parameter (biases and norm parameters included), so that neither number flatters the other.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn import metrics as skm
from torch import nn

from sparsetrain.core.models import PRUNABLE, prunable_weights
from sparsetrain.core.sparsity.masks import density_of


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, prefix: str = "test") -> dict[str, float]:
    """Accuracy and macro-averaged F1 / precision / recall (every class weighs the same)."""
    return {
        f"{prefix}_accuracy": float(skm.accuracy_score(y_true, y_pred)),
        f"{prefix}_f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        f"{prefix}_precision_macro": float(
            skm.precision_score(y_true, y_pred, average="macro", zero_division=0)
        ),
        f"{prefix}_recall_macro": float(skm.recall_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, prefix: str = "test") -> dict[str, float]:
    """R^2 and root mean squared error."""
    return {
        f"{prefix}_r2": float(skm.r2_score(y_true, y_pred)),
        f"{prefix}_rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
    }


def task_metrics(task: str, y_true: np.ndarray, y_pred: np.ndarray, prefix: str = "test") -> dict[str, float]:
    scorer = classification_metrics if task == "classification" else regression_metrics
    return scorer(y_true, y_pred, prefix)


def primary_metric(task: str, prefix: str = "test") -> str:
    """The metric a version is judged by: accuracy for classifiers, R^2 for regressors."""
    return f"{prefix}_accuracy" if task == "classification" else f"{prefix}_r2"


def sparsity_metrics(model: nn.Module) -> dict[str, float]:
    """Nonzero counts and densities over the prunable weights and over all parameters."""
    prunable = prunable_weights(model)
    prunable_total = sum(w.numel() for w in prunable)
    prunable_nonzero = sum(int(torch.count_nonzero(w)) for w in prunable)
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    return {
        "density": density_of(prunable),
        "prunable_params": float(prunable_total),
        "prunable_nonzero": float(prunable_nonzero),
        "nonzero_params": float(nonzero),
        "total_params": float(total),
        "density_all": density_of(params),
        "bytes_dense": float(4 * total),
    }


@dataclass(frozen=True)
class LayerSparsity:
    """One prunable layer: its stable name (``layer<i>``, the position among the prunable layers in
    forward order, as penalties and pruners address them), its module path in the network, what
    it is (``Linear 64->10``, ``Conv2d 1->6 5x5``), and its nonzero count, size and density."""

    name: str
    module: str
    kind: str
    nonzeros: int
    total: int

    @property
    def density(self) -> float:
        return self.nonzeros / self.total if self.total else 0.0


def layer_sparsity(model: nn.Module) -> list[LayerSparsity]:
    """Every prunable layer's nonzeros and density, in forward order.

    Layers are named by position (``layer0`` is the first prunable layer), not by module path:
    the path moves with the modules around the layer (an MLP's second Linear is module ``3``, or
    ``4`` with batch normalization), the position does not; ``module`` keeps the path."""
    layers = []
    for path, module in model.named_modules():
        if not isinstance(module, PRUNABLE):  # the layers of prunable_weights, in the same order
            continue
        weight = module.weight
        kind = f"{type(module).__name__} {weight.shape[1]}->{weight.shape[0]}"
        if weight.dim() > 2:  # a convolution: its kernel size
            kind += " " + "x".join(str(d) for d in weight.shape[2:])
        layers.append(
            LayerSparsity(
                name=f"layer{len(layers)}",
                module=path,
                kind=kind,
                nonzeros=int(torch.count_nonzero(weight)),
                total=int(weight.numel()),
            )
        )
    return layers


def layer_metrics(model: nn.Module) -> dict[str, float]:
    """``density.<layer>`` and ``nonzeros.<layer>`` of every prunable layer (names of
    :func:`layer_sparsity`: ``density.layer0``, ``nonzeros.layer0``, ...)."""
    metrics: dict[str, float] = {}
    for layer in layer_sparsity(model):
        metrics[f"density.{layer.name}"] = float(layer.density)
        metrics[f"nonzeros.{layer.name}"] = float(layer.nonzeros)
    return metrics


class single_thread:
    """Pin torch to one thread while timing: sparse kernels stall on a loaded 2-core machine."""

    def __enter__(self) -> None:
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._threads)


def _time_calls(call: Callable[[], object], repeats: int) -> list[float]:
    call()  # warm-up: allocations and lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def speed_metrics(
    model: nn.Module, X: np.ndarray, *, repeats: int = 50, large_batch: int = 1024, suffix: str = ""
) -> dict[str, float]:
    """Median batch-of-one latency and large-batch throughput on the CPU, one thread."""
    model = model.to("cpu").eval()
    X_t = torch.as_tensor(X[: max(1, min(len(X), large_batch))], dtype=torch.float32)
    big = X_t.repeat(int(np.ceil(large_batch / len(X_t))), 1)[:large_batch]
    one = X_t[:1]
    with torch.inference_mode(), single_thread():
        latency = statistics.median(_time_calls(lambda: model(one), repeats))
        batch_time = statistics.median(_time_calls(lambda: model(big), max(3, repeats // 10)))
    return {
        f"latency_ms_p50{suffix}": 1000.0 * latency,
        f"throughput_per_s{suffix}": large_batch / batch_time,
    }


def selected_features(
    model: nn.Module, feature_names: list[str] | tuple[str, ...]
) -> list[dict[str, object]]:
    """Input features with a nonzero weight in any output of the first layer (feature selection).

    Only meaningful when the first prunable layer reads the input features directly.
    """
    first = prunable_weights(model)[0].detach().cpu()
    if first.dim() != 2 or first.shape[1] != len(feature_names):
        return []
    norms = first.abs().sum(dim=0).numpy()
    return [
        {"feature": name, "index": i, "weight_l1": float(norms[i])}
        for i, name in enumerate(feature_names)
        if norms[i] > 0
    ]
