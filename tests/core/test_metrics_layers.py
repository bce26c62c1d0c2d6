"""Per-layer complexity (issue 12, part 4): density and nonzeros of every prunable layer, by a
stable name (tests/pipelines/test_layer_density.py: in the evaluation and its plot)."""

from __future__ import annotations

import torch

from sparsetrain.core.metrics import layer_metrics, layer_sparsity, sparsity_metrics
from sparsetrain.core.models import build_model, prunable_weights


def test_layers_are_named_by_position_with_hand_counted_nonzeros():
    model = build_model("mlp", 6, 3, hidden=[4, 5], batch_norm=True, dropout=0.1)
    weights = prunable_weights(model)
    with torch.no_grad():
        weights[0][:, :3] = 0  # 12 of 24 weights
        weights[1].zero_()  # 0 of 20
        weights[2][0, 0] = 0  # 14 of 15
    layers = layer_sparsity(model)
    assert [layer.name for layer in layers] == ["layer0", "layer1", "layer2"]
    # the module paths move with batch norm and dropout; the names do not
    assert [layer.module for layer in layers] == ["1", "5", "9"]
    assert [layer.kind for layer in layers] == ["Linear 6->4", "Linear 4->5", "Linear 5->3"]
    assert [(layer.nonzeros, layer.total) for layer in layers] == [(12, 24), (0, 20), (14, 15)]
    assert layer_metrics(model) == {
        "density.layer0": 0.5, "nonzeros.layer0": 12.0,
        "density.layer1": 0.0, "nonzeros.layer1": 0.0,
        "density.layer2": 14 / 15, "nonzeros.layer2": 14.0,
    }
    # the layers add up to the whole network's prunable count
    overall = sparsity_metrics(model)
    assert sum(layer.nonzeros for layer in layers) == overall["prunable_nonzero"]
    assert sum(layer.total for layer in layers) == overall["prunable_params"]
    plain = build_model("mlp", 6, 3, hidden=[4, 5])
    assert [layer.name for layer in layer_sparsity(plain)] == ["layer0", "layer1", "layer2"]
    assert [layer.module for layer in layer_sparsity(plain)] == ["1", "3", "5"]


def test_convolution_layers_carry_their_kernel():
    model = build_model("cnn", 64, 10, image_shape=(1, 8, 8))
    kinds = [layer.kind for layer in layer_sparsity(model)]
    assert kinds[:2] == ["Conv2d 1->6 5x5", "Conv2d 6->16 5x5"]
    assert len(kinds) == len(prunable_weights(model)) == 5
    assert all(m.startswith("density.layer") or m.startswith("nonzeros.layer") for m in layer_metrics(model))
