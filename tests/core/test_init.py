"""Initializers: the empirical std matches each formula (fan-in / fan-out, ReLU gain)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsetrain.core.init import INITIALIZERS, NAIVE_STD, RELU_GAIN, initialize
from sparsetrain.errors import SparsetrainError

LAYERS = {
    "linear": lambda: nn.Linear(300, 200),
    "conv": lambda: nn.Conv2d(32, 64, 3),
}


def fans(layer: nn.Module) -> tuple[int, int]:
    w = layer.weight
    receptive = w[0][0].numel()
    return w.shape[1] * receptive, w.shape[0] * receptive


def expected_std(name: str, fan_in: int, fan_out: int, rows: int) -> float:
    if name.startswith("xavier"):
        return RELU_GAIN * math.sqrt(2.0 / (fan_in + fan_out))
    if name.startswith("kaiming"):
        return RELU_GAIN / math.sqrt(fan_in)
    if name == "normal":  # the naive baseline: one std whatever the layer
        return NAIVE_STD
    return RELU_GAIN / math.sqrt(max(rows, fan_in))  # orthogonal


def test_relu_gain():
    assert RELU_GAIN == pytest.approx(nn.init.calculate_gain("relu"))


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_empirical_std_matches_the_formula(name, layer):
    torch.manual_seed(0)
    module = LAYERS[layer]()
    nn.init.normal_(module.bias)
    initialize(nn.Sequential(module), name)
    fan_in, fan_out = fans(module)
    w = module.weight.detach()
    assert float(w.std()) == pytest.approx(expected_std(name, fan_in, fan_out, w.shape[0]), rel=0.03)
    assert float(w.mean()) == pytest.approx(0.0, abs=0.01)
    assert torch.count_nonzero(module.bias) == 0
    if name.endswith("uniform"):  # a uniform law has its bound at sqrt(3) std
        bound = math.sqrt(3.0) * expected_std(name, fan_in, fan_out, w.shape[0])
        assert float(w.abs().max()) <= bound + 1e-6
        assert float(w.abs().max()) > 0.98 * bound


def test_orthogonal_rows_are_orthonormal_up_to_the_gain():
    torch.manual_seed(0)
    module = nn.Linear(50, 20)
    initialize(nn.Sequential(module), "orthogonal")
    w = module.weight.detach()
    torch.testing.assert_close(w @ w.T, RELU_GAIN**2 * torch.eye(20), atol=1e-5, rtol=1e-5)


def test_unknown_initializer():
    with pytest.raises(SparsetrainError, match="model.init"):
        initialize(nn.Sequential(nn.Linear(2, 2)), "zeros")
