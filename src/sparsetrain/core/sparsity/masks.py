"""Mask rules: *what* to prune. Pure functions from tensors to boolean keep-masks.

A mask has the shape of the tensor it masks, ``True`` where the entry is kept. Every rule takes the
``current`` mask (``None`` = keep all) and only ever returns a subset of it, so that masks only
shrink however often a pruner calls them. Densities are fractions of the *whole* tensor (or of all
tensors, for the global rule), in ``(0, 1]``; a density never keeps fewer than one entry per tensor,
so that no layer is cut off entirely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from sparsetrain.errors import SparsetrainError


def n_keep(n: int, density: float) -> int:
    """How many of ``n`` entries a density keeps: ``round(density * n)``, at least 1 (and <= n)."""
    if not 0.0 < density <= 1.0:
        raise SparsetrainError(f"sparsity.target_density must be in (0, 1], got {density!r}")
    return max(1, min(n, round(density * n)))


def _full(shape: torch.Size, device: torch.device) -> Tensor:
    return torch.ones(shape, dtype=torch.bool, device=device)


def top_k_mask(scores: Tensor, k: int, current: Tensor | None = None) -> Tensor:
    """Keep the ``k`` highest scores among the entries ``current`` keeps (all of them if it keeps
    at most ``k``); ties are broken by ``torch.topk``, so exactly ``min(k, kept)`` entries stay."""
    current = _full(scores.shape, scores.device) if current is None else current.bool()
    kept = int(current.sum())
    if k >= kept:
        return current.clone()
    ranked = torch.where(current, scores, torch.full_like(scores, -torch.inf)).flatten()
    mask = torch.zeros(ranked.numel(), dtype=torch.bool, device=scores.device)
    mask[torch.topk(ranked, k, sorted=False).indices] = True
    return mask.view(scores.shape)


def magnitude_mask(w: Tensor, density: float, current: Tensor | None = None) -> Tensor:
    """Layer-wise magnitude pruning: keep the ``round(density * w.numel())`` largest ``|w|``."""
    return top_k_mask(w.detach().abs(), n_keep(w.numel(), density), current)


def floor_mask(w: Tensor, floor: float, current: Tensor | None = None) -> Tensor:
    """The ``round(floor * w.numel())`` largest ``|w|`` (none for a floor of 0): what a per-layer
    density floor (``sparsity.min_layer_density``) keeps whatever the rest of the rule says."""
    if floor <= 0.0:
        return torch.zeros(w.shape, dtype=torch.bool, device=w.device)
    return top_k_mask(w.detach().abs(), n_keep(w.numel(), floor), current)


def global_magnitude_masks(
    weights: Sequence[Tensor], density: float, current: Sequence[Tensor | None] | None = None,
    floor: float = 0.0,
) -> list[Tensor]:
    """Global magnitude pruning: keep the ``round(density * total)`` largest ``|w|`` over all
    tensors together, so layers end up with different densities; each layer keeps at least its
    ``floor`` (its largest weights), so that no layer is pruned to almost nothing."""
    if not weights:
        return []
    current = list(current) if current is not None else [None] * len(weights)
    reserved = torch.cat([floor_mask(w, floor, m).flatten() for w, m in zip(weights, current)])
    scores = torch.cat([w.detach().abs().flatten() for w in weights]).masked_fill(reserved, torch.inf)
    masks = torch.cat([
        (_full(w.shape, w.device) if m is None else m.bool()).flatten() for w, m in zip(weights, current)
    ])
    k = max(n_keep(scores.numel(), density), int(reserved.sum()))
    flat = top_k_mask(scores, k, masks)
    return [part.view(w.shape) for part, w in zip(flat.split([w.numel() for w in weights]), weights)]


def threshold_mask(w: Tensor, threshold: float, current: Tensor | None = None) -> Tensor:
    """Keep the entries with ``|w| >= threshold`` (Han et al. 2015); may keep none."""
    if not threshold >= 0.0:
        raise SparsetrainError(f"sparsity.threshold must be >= 0, got {threshold!r}")
    mask = w.detach().abs() >= threshold
    return mask if current is None else mask & current.bool()


def unit_scores(incoming: Tensor, outgoing: Tensor, scale: Tensor | None = None) -> Tensor:
    """Importance of each hidden unit (neuron or convolution channel) ``i``:
    ``||incoming[i]||_2 * ||outgoing[:, i]||_2``.

    ``incoming`` has the units first (the rows of the layer that computes them, ``(units, ...)``),
    ``outgoing`` has them second (the next layer's columns or input channels, ``(out, units, ...)``).
    The product measures how much the unit can carry from input to output. When a BatchNorm
    follows the unit, its scale ``|gamma_i|`` replaces the incoming norm (``scale``), since the
    normalization undoes the incoming weights' norm.
    """
    units = incoming.shape[0]
    if outgoing.shape[1] != units:
        raise ValueError(f"outgoing has {outgoing.shape[1]} units on dim 1, incoming {units} on dim 0")
    norm_in = incoming.detach().reshape(units, -1).norm(dim=1) if scale is None else scale.detach().abs()
    norm_out = outgoing.detach().transpose(0, 1).reshape(units, -1).norm(dim=1)
    return norm_in * norm_out


def unit_mask(scores: Tensor, density: float, current: Tensor | None = None) -> Tensor:
    """Keep the ``round(density * units)`` highest-scoring units (at least one)."""
    return top_k_mask(scores, n_keep(scores.numel(), density), current)


def density_of(tensors: Sequence[Tensor]) -> float:
    """Fraction of nonzero entries over all ``tensors``: the kept entries of masks, the nonzero
    weights of a model. The one density of the project (trainer, metrics, export), so that every
    report counts zeros the same way."""
    total = sum(t.numel() for t in tensors)
    return float(sum(int(torch.count_nonzero(t)) for t in tensors)) / max(total, 1)


def _erk_score(shape: Sequence[int]) -> float:
    """Erdos-Renyi-Kernel (Evci et al. 2020): ``sum(dims) / prod(dims)``, so that small layers,
    and those whose every weight serves many paths (the output layer, first convolutions), stay denser."""
    return float(sum(shape)) / float(math.prod(shape))


def layer_densities(
    shapes: Sequence[Sequence[int]], density: float, rule: str = "uniform", floor: float = 0.0
) -> list[float]:
    """Per-layer densities whose weighted mean is ``density``: ``uniform`` (every layer the same) or
    ``erk`` (proportional to :func:`_erk_score`), each capped at 1 and raised to at least ``floor``;
    a layer at a cap or the floor is fixed and the others are rescaled, one layer at a time."""
    if rule not in ("uniform", "erk"):
        raise SparsetrainError(f"sparsity.layer_density '{rule}' is unknown; choose uniform or erk")
    if not 0.0 <= floor <= density:
        raise SparsetrainError(
            f"sparsity.min_layer_density must be in [0, target_density={density!r}], got {floor!r}"
        )
    sizes = [math.prod(s) for s in shapes]
    raw = [1.0 if rule == "uniform" else _erk_score(s) for s in shapes]
    fixed: dict[int, float] = {}
    while len(fixed) < len(sizes):
        free = [i for i in range(len(sizes)) if i not in fixed]
        budget = density * sum(sizes) - sum(fixed[i] * sizes[i] for i in fixed)
        eps = budget / sum(raw[i] * sizes[i] for i in free)
        over = [i for i in free if eps * raw[i] > 1.0]
        under = [i for i in free if eps * raw[i] < floor]
        if over:
            fixed[max(over, key=lambda i: raw[i])] = 1.0
        elif under:
            fixed[min(under, key=lambda i: raw[i])] = floor
        else:
            return [fixed.get(i, eps * raw[i]) for i in range(len(sizes))]
    return [fixed[i] for i in range(len(sizes))]


def nm_mask(w: Tensor, n: int = 2, m: int = 4) -> Tensor:
    """N:M semi-structured sparsity: in each group of ``m`` consecutive weights along the (flattened)
    input dimension, keep the ``n`` largest ``|w|`` -- the layout of the 2:4 sparse tensor cores. A
    convolution's input dimension is ``(in, kh, kw)`` flattened, as im2col reads it; a last, shorter
    group keeps at most ``n``."""
    if not 1 <= n < m:
        raise SparsetrainError(f"sparsity.n and sparsity.m must satisfy 1 <= n < m, got {n!r}:{m!r}")
    rows = w.shape[0]
    flat = w.detach().abs().reshape(rows, -1)
    width = flat.shape[1]
    padded = torch.nn.functional.pad(flat, (0, (-width) % m), value=-math.inf).view(rows, -1, m)
    keep = torch.zeros_like(padded, dtype=torch.bool)
    keep.scatter_(-1, padded.topk(n, dim=-1).indices, True)
    return keep.view(rows, -1)[:, :width].reshape(w.shape)
