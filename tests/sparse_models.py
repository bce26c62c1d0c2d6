"""Networks made sparse by hand, for tests of what stores and runs them (export, inference)."""

from __future__ import annotations

import torch

from sparsetrain.core.models import prunable_weights


def sparsify(model, density, seed=0):
    """Keep a random ``density`` fraction of every prunable weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in prunable_weights(model):
            w.mul_((torch.rand(w.shape, generator=g) < density).float())
    return model
