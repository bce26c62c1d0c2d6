"""N:M semi-structured sparsity: the pattern checked exactly, the mask held through steps, the
warm-up, the config keys, and one recipe run on digits."""

from __future__ import annotations

import pickle

import pytest
import torch
from digits_data import standardized_digits
from pydantic import ValidationError
from torch import nn

from sparsetrain.config.sections import ModelConfig, SparsityConfig, TrainingConfig
from sparsetrain.core.data import DatasetInfo, Splits, load_digits_dataset
from sparsetrain.core.models import build_model, prunable_weights
from sparsetrain.core.sparsity.masks import nm_mask
from sparsetrain.core.sparsity.pruner import NMPruner, make_pruner
from sparsetrain.errors import SparsetrainError


def groups_of(mask: torch.Tensor, m: int) -> torch.Tensor:
    rows = mask.shape[0]
    return mask.reshape(rows, -1).reshape(rows, -1, m)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (1, 2)])
def test_each_group_keeps_exactly_its_n_largest(n, m):
    w = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    mask = nm_mask(w, n, m)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    assert (groups_of(mask, m).sum(-1) == n).all()
    expected = torch.zeros_like(mask).view(6, -1, m)
    expected.scatter_(-1, w.abs().view(6, -1, m).topk(n, dim=-1).indices, True)
    assert torch.equal(mask, expected.view(6, 16))


def test_a_known_2_4_pattern():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.0, 5.0, 4.0, -6.0, 1.0]])
    assert nm_mask(w).tolist() == [[False, True, True, False, True, False, True, False]]


def test_convolutions_group_along_the_flattened_input_and_a_short_group_keeps_at_most_n():
    conv = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(1))  # 18 inputs: 4 groups + 2
    mask = nm_mask(conv, 2, 4)
    flat = mask.reshape(3, 18)
    assert (flat[:, :16].reshape(3, 4, 4).sum(-1) == 2).all()
    assert (flat[:, 16:].sum(-1) == 2).all()  # the last group of two keeps both
    odd = nm_mask(torch.randn(2, 5), 2, 4)
    assert (odd[:, 4:].sum(-1) == 1).all()  # a group of one keeps its one


def test_invalid_n_m_fail_with_the_key():
    for n, m in [(0, 4), (4, 4), (5, 4)]:
        with pytest.raises(SparsetrainError, match="sparsity.n"):
            NMPruner(n=n, m=m)
        with pytest.raises(SparsetrainError, match="sparsity.n"):
            nm_mask(torch.randn(2, 8), n, m)


def test_config_validates_the_new_sparsity_keys():
    for bad in [dict(n=4, m=4), dict(n=0), dict(update_every=0), dict(min_layer_density=1.5),
                dict(pruning="rigl", min_layer_density=0.5, target_density=0.1), dict(layer_density="random"),
                dict(pruning="snip")]:
        with pytest.raises(ValidationError):
            SparsityConfig(**bad)
    assert SparsityConfig(pruning="nm", n=1, m=8).m == 8
    assert SparsityConfig(pruning="threshold", min_layer_density=0.5).min_layer_density == 0.5


def test_mask_holds_through_optimizer_steps_and_masked_weights_get_no_gradient():
    torch.manual_seed(0)
    model = build_model("mlp", 12, 3, hidden=(16,))
    pruner = make_pruner("nm", n=2, m=4)
    weights = prunable_weights(model)
    pruner.attach(model, weights)
    pruner.on_epoch_start(0, 3)
    masks = [m.clone() for m in pruner.masks]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for step in range(5):
        x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        assert all(torch.count_nonzero(w.grad[~m]) == 0 for w, m in zip(weights, masks))
        opt.step()
        pruner.after_step()
        for w, m in zip(weights, masks):
            assert torch.count_nonzero(w[~m]) == 0
            assert (groups_of(w != 0, 4).sum(-1) <= 2).all()
    pruner.finalize(model)
    assert all(torch.equal(a, b) for a, b in zip(pruner.masks, masks))
    assert pickle.loads(pickle.dumps(pruner)) == pruner


def test_warm_up_trains_dense_before_the_mask():
    model = build_model("mlp", 12, 3, hidden=(16,))
    pruner = make_pruner("nm", prune_start=0.5)
    pruner.attach(model, prunable_weights(model))
    assert pruner.frozen_from(5) == 2  # epoch 2 of 5 is training fraction 0.5
    for epoch in range(2):
        pruner.on_epoch_start(epoch, 5)
    assert not pruner.masks  # dense warm-up
    pruner.on_epoch_start(2, 5)
    assert len(pruner.masks) == 2


def test_train_network_on_digits_with_2_4():
    from sparsetrain.recipe import train_network

    splits, info = Splits(*standardized_digits(seed=42)), DatasetInfo.of(load_digits_dataset())
    sparsity = SparsityConfig(penalty="none", pruning="nm")
    network, _ = train_network(splits, info, ModelConfig(kind="mlp", hidden=(64,)), sparsity,
                               TrainingConfig(epochs=8, verbose=False))
    for w in prunable_weights(network):
        assert (groups_of(w != 0, 4).sum(-1) <= 2).all()
    with torch.no_grad():
        accuracy = float((network(torch.as_tensor(splits.X_test)).argmax(1).numpy() == splits.y_test).mean())
    assert accuracy > 0.9
