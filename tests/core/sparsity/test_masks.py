"""Mask rules: exact counts, masks only shrink, the unit scores' formula."""

from __future__ import annotations

import pytest
import torch

from sparsetrain.core.sparsity.masks import (
    density_of,
    global_magnitude_masks,
    magnitude_mask,
    n_keep,
    threshold_mask,
    top_k_mask,
    unit_mask,
    unit_scores,
)
from sparsetrain.errors import SparsetrainError


def weight(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_n_keep_rounds_and_keeps_at_least_one():
    assert n_keep(100, 0.1) == 10
    assert n_keep(64, 0.1) == 6
    assert n_keep(10, 0.01) == 1
    assert n_keep(10, 1.0) == 10
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(SparsetrainError, match="target_density"):
            n_keep(10, bad)


@pytest.mark.parametrize("shape", [(30, 20), (6, 3, 5, 5)])
@pytest.mark.parametrize("density", [0.5, 0.1, 0.013])
def test_magnitude_mask_keeps_exactly_the_largest(shape, density):
    w = weight(*shape)
    mask = magnitude_mask(w, density)
    k = n_keep(w.numel(), density)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    assert int(mask.sum()) == k
    assert w[mask].abs().min() >= w[~mask].abs().max()


def test_top_k_is_exact_with_ties():
    mask = top_k_mask(torch.ones(4, 5), 7)
    assert int(mask.sum()) == 7


def test_masks_only_shrink():
    w = weight(20, 10)
    current = magnitude_mask(w, 0.5)
    w2 = weight(20, 10, seed=1)  # weights moved: a new ranking
    smaller = magnitude_mask(w2, 0.2, current)
    assert int(smaller.sum()) == 40
    assert not (smaller & ~current).any()
    # asking for more than is kept keeps the current mask, never grows it
    assert torch.equal(magnitude_mask(w2, 0.9, current), current)
    assert not (threshold_mask(w2, 0.5, current) & ~current).any()


def test_global_magnitude_masks_keep_the_largest_over_all_layers():
    weights = [weight(10, 8) * 0.1, weight(5, 4, seed=2) * 10.0]
    masks = global_magnitude_masks(weights, 0.25)
    assert sum(int(m.sum()) for m in masks) == n_keep(100, 0.25)
    kept = torch.cat([w[m].abs() for w, m in zip(weights, masks)])
    dropped = torch.cat([w[~m].abs() for w, m in zip(weights, masks)])
    assert kept.min() >= dropped.max()
    assert int(masks[1].sum()) > int(masks[0].sum())  # the large layer keeps more
    assert [m.shape for m in masks] == [w.shape for w in weights]
    current = [masks[0], None]
    again = global_magnitude_masks(weights, 0.1, current)
    assert not (again[0] & ~masks[0]).any() and sum(int(m.sum()) for m in again) == 10


def test_threshold_mask():
    w = torch.tensor([[0.5, -0.01], [0.02, -0.3]])
    assert torch.equal(threshold_mask(w, 0.02), torch.tensor([[True, False], [True, True]]))
    with pytest.raises(SparsetrainError, match="threshold"):
        threshold_mask(w, -1.0)


def test_unit_scores_is_incoming_norm_times_outgoing_norm():
    incoming = weight(4, 3)
    outgoing = weight(2, 4, seed=1)
    expected = incoming.norm(dim=1) * outgoing.norm(dim=0)
    torch.testing.assert_close(unit_scores(incoming, outgoing), expected)
    gamma = torch.tensor([1.0, -2.0, 0.5, 0.0])
    torch.testing.assert_close(unit_scores(incoming, outgoing, gamma), gamma.abs() * outgoing.norm(dim=0))
    # convolution channels: (out, in, kh, kw) kernels, channel c is dim 1 of the next kernel
    conv_in, conv_out = weight(6, 1, 5, 5), weight(16, 6, 5, 5, seed=3)
    expected = conv_in.flatten(1).norm(dim=1) * conv_out.transpose(0, 1).flatten(1).norm(dim=1)
    torch.testing.assert_close(unit_scores(conv_in, conv_out), expected)


def test_unit_mask_and_density():
    scores = torch.tensor([3.0, 1.0, 2.0, 0.5])
    assert torch.equal(unit_mask(scores, 0.5), torch.tensor([True, False, True, False]))
    assert density_of([torch.tensor([True, False]), torch.tensor([True, True])]) == 0.75


def test_density_of_weights_counts_nonzeros_over_all_tensors():
    assert density_of([torch.tensor([0.0, -2.0]), torch.tensor([[1.0, 0.0], [0.0, 3.0]])]) == 0.5
    assert density_of([]) == 0.0
