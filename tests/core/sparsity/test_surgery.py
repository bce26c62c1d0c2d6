"""Model surgery: where the hidden units are, and a smaller copy that computes what the masked
network computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsetrain.core.models import build_model, prunable_weights
from sparsetrain.core.sparsity.surgery import HiddenLayer, hidden_layers, shrink
from sparsetrain.errors import SparsetrainError


def with_random_statistics(model: nn.Sequential, seed=0) -> nn.Sequential:
    """Nonzero BatchNorm statistics and affine terms, so that slicing a norm is really checked."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=gen))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


MODELS = {
    "mlp": lambda: build_model("mlp", 12, 3, hidden=(10, 8)),
    "mlp-bn-dropout": lambda: build_model("mlp", 12, 3, hidden=(10, 8), batch_norm=True, dropout=0.1),
    "cnn-bn": lambda: build_model("cnn", 64, 4, image_shape=(1, 8, 8), batch_norm=True),
}


def random_keep(model: nn.Sequential, seed=0) -> list[torch.Tensor]:
    """Keep about half the units of every hidden layer, at least one."""
    gen = torch.Generator().manual_seed(seed)
    children = list(model)
    keep = []
    for hidden in hidden_layers(model):
        units = children[hidden.layer].weight.shape[0]
        mask = torch.rand(units, generator=gen) < 0.5
        mask[0] = True
        keep.append(mask)
    return keep


def mask_units(model: nn.Sequential, keep: list[torch.Tensor]) -> None:
    """Zero what a removed unit owns: its row and bias, its norm's scale and shift, its columns."""
    children = list(model)
    with torch.no_grad():
        for hidden, mask in zip(hidden_layers(model), keep):
            layer, reader = children[hidden.layer], children[hidden.next]
            layer.weight[~mask] = 0.0
            layer.bias[~mask] = 0.0
            if hidden.norm is not None:
                children[hidden.norm].weight[~mask] = 0.0
                children[hidden.norm].bias[~mask] = 0.0
            reader.weight[:, ~mask.repeat_interleave(hidden.block)] = 0.0


def test_hidden_layers_find_each_layer_its_norm_and_its_reader():
    mlp = build_model("mlp", 12, 3, hidden=(10, 8), batch_norm=True, dropout=0.1)
    assert hidden_layers(mlp) == [HiddenLayer(1, 2, 5, 1), HiddenLayer(5, 6, 9, 1)]
    cnn = build_model("cnn", 64, 4, image_shape=(1, 8, 8))
    flatten = next(h for h in hidden_layers(cnn) if isinstance(cnn[h.next], nn.Linear))
    channels, columns = cnn[flatten.layer].out_channels, cnn[flatten.next].in_features
    assert flatten.block == columns // channels > 1  # each channel feeds its H x W columns
    assert hidden_layers(build_model("linear", 5, 2)) == []


@pytest.mark.parametrize("kind", list(MODELS))
def test_shrink_computes_what_the_masked_network_computes(kind):
    torch.manual_seed(0)
    model = with_random_statistics(MODELS[kind]())
    keep = random_keep(model)
    mask_units(model, keep)
    smaller = shrink(model, keep).eval()
    x = torch.randn(6, model[1].in_features if isinstance(model[1], nn.Linear) else 64)
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), model(x), atol=1e-5, rtol=1e-5)
    widths = [smaller[h.layer].weight.shape[0] for h in hidden_layers(model)]
    assert widths == [int(k.sum()) for k in keep]
    assert sum(w.numel() for w in prunable_weights(smaller)) < sum(w.numel() for w in prunable_weights(model))
    assert smaller.arch == model.arch


def test_shrink_needs_one_mask_per_hidden_layer():
    model = build_model("mlp", 12, 3, hidden=(10, 8))
    with pytest.raises(ValueError, match="one unit mask per hidden layer"):
        shrink(model, [torch.ones(10, dtype=torch.bool)])


@pytest.mark.parametrize(
    "model",
    [
        nn.Linear(3, 2),
        nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)),
        nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU(), nn.Conv2d(4, 4, 3)),
        nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(5, 2)),
    ],
    ids=["not-sequential", "unknown-activation", "grouped-conv", "mismatched-widths"],
)
def test_layouts_it_cannot_slice_fail_with_the_setting(model):
    with pytest.raises(SparsetrainError, match="structured"):
        hidden_layers(model)
