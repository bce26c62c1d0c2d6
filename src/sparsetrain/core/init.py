"""Weight initializers by config name (``model.init``); biases start at zero.

Each initializer is a small in-place function with its formula and paper. ``fan_in`` is the number
of inputs of a unit (``in_features``, or ``in_channels * kh * kw`` for a convolution), ``fan_out``
the number of outputs (``out_features``, or ``out_channels * kh * kw``). Every layer uses the ReLU
gain ``sqrt(2)``, the networks' activation (the tanh LeNet's recommended gain, 5/3, is close).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

from sparsetrain.errors import SparsetrainError

RELU_GAIN = math.sqrt(2.0)


def _xavier_uniform(w: Tensor) -> None:
    """Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
    networks": ``U(-a, a)``, ``a = gain * sqrt(6 / (fan_in + fan_out))``, so
    ``std = gain * sqrt(2 / (fan_in + fan_out))``; gain ``sqrt(2)``."""
    nn.init.xavier_uniform_(w, gain=RELU_GAIN)


def _xavier_normal(w: Tensor) -> None:
    """Glorot & Bengio 2010: ``N(0, std^2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``;
    gain ``sqrt(2)``."""
    nn.init.xavier_normal_(w, gain=RELU_GAIN)


def _kaiming_uniform(w: Tensor) -> None:
    """He et al. 2015, "Delving deep into rectifiers": ``U(-b, b)``,
    ``b = gain * sqrt(3 / fan_in) = sqrt(6 / fan_in)`` for ReLU, so ``std = sqrt(2 / fan_in)``."""
    nn.init.kaiming_uniform_(w, nonlinearity="relu")


def _kaiming_normal(w: Tensor) -> None:
    """He et al. 2015: ``N(0, std^2)``, ``std = gain / sqrt(fan_in) = sqrt(2 / fan_in)`` for ReLU."""
    nn.init.kaiming_normal_(w, nonlinearity="relu")


def _orthogonal(w: Tensor) -> None:
    """Saxe et al. 2014, "Exact solutions to the nonlinear dynamics of learning in deep linear
    neural networks": the weight, viewed as a ``out x fan_in`` matrix, is ``gain`` times a
    (semi-)orthogonal one (orthonormal rows or columns, whichever are fewer), so its entries have
    ``std = gain / sqrt(max(out, fan_in))``; gain ``sqrt(2)``."""
    nn.init.orthogonal_(w, gain=RELU_GAIN)


NAIVE_STD = 0.01


def _normal(w: Tensor) -> None:
    """The naive baseline the proper initializations are measured against: ``N(0, 0.01^2)`` for
    every layer, whatever its fan-in (signals shrink layer by layer; claim C3 of the study)."""
    nn.init.normal_(w, mean=0.0, std=NAIVE_STD)


INITIALIZERS: dict[str, Callable[[Tensor], None]] = {
    "xavier_uniform": _xavier_uniform,
    "xavier_normal": _xavier_normal,
    "kaiming_uniform": _kaiming_uniform,
    "kaiming_normal": _kaiming_normal,
    "orthogonal": _orthogonal,
    "normal": _normal,
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
