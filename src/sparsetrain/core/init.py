"""Weight initializers by config name (``model.init``); biases start at zero."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

from sparsetrain.errors import SparsetrainError

RELU_GAIN = math.sqrt(2.0)


def _xavier_uniform(w: Tensor) -> None:
    """Glorot & Bengio 2010: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)), gain sqrt(2) for ReLU."""
    nn.init.xavier_uniform_(w, gain=RELU_GAIN)


def _xavier_normal(w: Tensor) -> None:
    """Glorot & Bengio 2010: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    nn.init.xavier_normal_(w, gain=RELU_GAIN)


def _kaiming_uniform(w: Tensor) -> None:
    """He et al. 2015: U(-b, b), b = sqrt(6 / fan_in) for ReLU."""
    nn.init.kaiming_uniform_(w, nonlinearity="relu")


def _kaiming_normal(w: Tensor) -> None:
    """He et al. 2015: N(0, 2 / fan_in) for ReLU."""
    nn.init.kaiming_normal_(w, nonlinearity="relu")


def _orthogonal(w: Tensor) -> None:
    """Saxe et al. 2014: a (semi-)orthogonal matrix scaled by the ReLU gain."""
    nn.init.orthogonal_(w, gain=RELU_GAIN)


INITIALIZERS: dict[str, Callable[[Tensor], None]] = {
    "xavier_uniform": _xavier_uniform,
    "xavier_normal": _xavier_normal,
    "kaiming_uniform": _kaiming_uniform,
    "kaiming_normal": _kaiming_normal,
    "orthogonal": _orthogonal,
}


def initialize(model: nn.Module, name: str) -> nn.Module:
    """Initialize every Linear / Conv weight in place with ``name``; zero every bias."""
    try:
        init_weight = INITIALIZERS[name]
    except KeyError:
        raise SparsetrainError(
            f"model.init '{name}' is unknown; choose one of {', '.join(INITIALIZERS)}"
        ) from None
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            init_weight(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
