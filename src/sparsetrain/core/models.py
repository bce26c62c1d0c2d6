"""Network builders: the architecture only, no training logic.

Every builder returns an ``nn.Sequential`` whose prunable weights (weight matrices and
convolution kernels) come out of :func:`prunable_weights` in forward order, so that penalties
and pruners address layers by position.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from sparsetrain.core.init import initialize
from sparsetrain.errors import SparsetrainError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def linear(n_features: int, n_outputs: int) -> nn.Sequential:
    """Multinomial logistic regression (classification) or linear regression: one affine map."""
    return nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_outputs))


def mlp(
    n_features: int,
    n_outputs: int,
    hidden: Sequence[int] = (300, 100),
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """ReLU multilayer perceptron: [Linear, (BatchNorm), ReLU, (Dropout)] per hidden layer."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = n_features
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


def build_model(
    kind: str,
    n_features: int,
    n_outputs: int,
    *,
    hidden: Sequence[int] = (300, 100),
    dropout: float = 0.0,
    batch_norm: bool = False,
    init: str = "kaiming_uniform",
    image_shape: tuple[int, int, int] | None = None,
) -> nn.Sequential:
    """Build ``model.kind`` and initialize it; call under a fixed torch seed for determinism."""
    if kind == "linear":
        model = linear(n_features, n_outputs)
    elif kind == "mlp":
        model = mlp(n_features, n_outputs, hidden, dropout, batch_norm)
    else:
        raise SparsetrainError(f"model.kind '{kind}' is unknown; choose linear, mlp or cnn")
    initialize(model, init)
    return model


def prunable_weights(model: nn.Module) -> list[nn.Parameter]:
    """Weight matrices and kernels in forward order (biases and norm parameters excluded)."""
    return [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]
