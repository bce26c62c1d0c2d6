"""Model builders: shapes, flattened inputs, the cnn's image checks, prunable weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsetrain.core.models import build_model, cnn, prunable_weights
from sparsetrain.errors import SparsetrainError


def test_linear_and_mlp_shapes_and_prunable_weights_in_forward_order():
    model = build_model("mlp", 20, 3, hidden=(16, 8), batch_norm=True, dropout=0.1)
    assert model(torch.randn(5, 20)).shape == (5, 3)
    assert [tuple(w.shape) for w in prunable_weights(model)] == [(16, 20), (8, 16), (3, 8)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model) == 2
    assert sum(isinstance(m, nn.Dropout) for m in model) == 2
    assert [tuple(w.shape) for w in prunable_weights(build_model("linear", 20, 3))] == [(3, 20)]


@pytest.mark.parametrize(
    ("shape", "features"),
    [((1, 8, 8), 16 * 4 * 4), ((1, 28, 28), 16 * 5 * 5), ((3, 32, 32), 16 * 6 * 6)],
)
def test_cnn_is_lenet5_and_takes_flattened_rows(shape, features):
    n = shape[0] * shape[1] * shape[2]
    model = build_model("cnn", n, 10, image_shape=shape)
    assert isinstance(model[0], nn.Unflatten)
    assert model(torch.randn(4, n)).shape == (4, 10)
    shapes = [tuple(w.shape) for w in prunable_weights(model)]
    assert shapes == [(6, shape[0], 5, 5), (16, 6, 5, 5), (120, features), (84, 120), (10, 84)]


def test_cnn_batch_norm_and_dropout():
    model = cnn((1, 8, 8), 10, dropout=0.2, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model) == 2
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model) == 2
    assert sum(isinstance(m, nn.Dropout) for m in model) == 2
    model.eval()
    assert model(torch.randn(3, 64)).shape == (3, 10)


def test_cnn_needs_an_image_shape():
    with pytest.raises(SparsetrainError) as error:
        build_model("cnn", 30, 3, image_shape=None)
    message = str(error.value)
    assert "model.kind" in message and "cnn" in message
    assert "compression" in message and "image" in message
    with pytest.raises(SparsetrainError, match="compression.method: none"):
        build_model("cnn", 30, 3, image_shape=(1, 8, 8))  # 64 pixels, 30 features: compressed
    with pytest.raises(SparsetrainError, match="at least"):
        build_model("cnn", 1, 3, image_shape=(1, 1, 1))


def test_unknown_kind():
    with pytest.raises(SparsetrainError, match="model.kind"):
        build_model("rnn", 3, 2)


def test_builds_are_deterministic_under_a_seed():
    torch.manual_seed(0)
    a = build_model("cnn", 64, 10, image_shape=(1, 8, 8))
    torch.manual_seed(0)
    b = build_model("cnn", 64, 10, image_shape=(1, 8, 8))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
