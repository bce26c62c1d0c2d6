"""Model surgery: *where* the hidden units of a network are, and a physically smaller copy of it.

Structured pruning decides which units to keep (``pruner.py``, ``masks.py``); this module knows the
layouts that ``models.py`` builds well enough to find each layer of hidden units, its BatchNorm and
the layer that reads it, and to slice all three. No training, no masks: tensors in, modules out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from sparsetrain.errors import SparsetrainError

_PASS_THROUGH = (nn.ReLU, nn.Tanh, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.Identity)
_LAYERS = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class HiddenLayer:
    """One layer of hidden units in an ``nn.Sequential``: ``layer`` (position of the Linear /
    Conv2d computing them), ``norm`` (position of the BatchNorm after it, if any), ``next``
    (position of the layer reading them) and ``block`` (how many of the next layer's input columns
    one unit feeds: 1, or ``H * W`` when a Flatten sits between a convolution and a Linear)."""

    layer: int
    norm: int | None
    next: int
    block: int


def hidden_layers(model: nn.Module) -> list[HiddenLayer]:
    """The hidden layers of a model built by ``models.py``; a clear error for other layouts."""
    layout_error = (
        "sparsity.pruning 'structured' supports the nn.Sequential layouts that models.py builds "
        "(Linear / Conv2d, BatchNorm, ReLU / Tanh, Dropout, Max / AvgPool2d, Flatten); "
    )
    if not isinstance(model, nn.Sequential):
        raise SparsetrainError(layout_error + f"got a {type(model).__name__}")
    children = list(model)
    positions = [i for i, m in enumerate(children) if isinstance(m, _LAYERS)]
    if any(isinstance(m, nn.Conv2d) and m.groups != 1 for m in children):
        raise SparsetrainError(layout_error + "grouped convolutions are not supported")
    layers: list[HiddenLayer] = []
    for here, nxt in zip(positions, positions[1:]):
        layer, reader = children[here], children[nxt]
        units = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        norm, flattened = None, False
        for offset, module in enumerate(children[here + 1 : nxt], start=here + 1):
            if isinstance(module, _BatchNorm) and norm is None and module.num_features == units:
                norm = offset
            elif isinstance(module, nn.Flatten):
                flattened = True
            elif not isinstance(module, _PASS_THROUGH):
                raise SparsetrainError(layout_error + f"got {type(module).__name__} at position {offset}")
        if isinstance(reader, nn.Conv2d):
            if not isinstance(layer, nn.Conv2d) or flattened or reader.in_channels != units:
                raise SparsetrainError(
                    layout_error + f"layer {nxt} does not read the channels of layer {here}"
                )
            block = 1
        else:
            block, rest = divmod(reader.in_features, units)
            if rest or (block != 1 and not (isinstance(layer, nn.Conv2d) and flattened)):
                raise SparsetrainError(layout_error + f"layer {nxt} does not read the units of layer {here}")
        layers.append(HiddenLayer(here, norm, nxt, block))
    return layers


def _slice_layer(layer: nn.Module, rows: Tensor | None, cols: Tensor | None) -> nn.Module:
    """A new Linear / Conv2d with only the kept output ``rows`` and input ``cols``."""
    weight = layer.weight.detach()
    if rows is not None:
        weight = weight[rows]
    if cols is not None:
        weight = weight[:, cols]
    bias = layer.bias.detach() if layer.bias is not None else None
    if bias is not None and rows is not None:
        bias = bias[rows]
    if isinstance(layer, nn.Linear):
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        new = nn.Conv2d(
            weight.shape[1], weight.shape[0], layer.kernel_size, stride=layer.stride, padding=layer.padding,
            dilation=layer.dilation, bias=bias is not None, padding_mode=layer.padding_mode,
        )
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.train(layer.training)
    return new


def _slice_norm(norm: _BatchNorm, keep: Tensor) -> _BatchNorm:
    new = type(norm)(
        int(keep.sum()), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
        track_running_stats=norm.track_running_stats,
    )
    new = new.to(device=keep.device)
    with torch.no_grad():
        if norm.affine:
            new.weight.copy_(norm.weight[keep])
            new.bias.copy_(norm.bias[keep])
        if norm.track_running_stats:
            new.running_mean.copy_(norm.running_mean[keep])
            new.running_var.copy_(norm.running_var[keep])
            new.num_batches_tracked.copy_(norm.num_batches_tracked)
    new.train(norm.training)
    return new


def shrink(model: nn.Sequential, keep: Sequence[Tensor]) -> nn.Sequential:
    """A physically smaller copy of ``model`` keeping, in each of ``hidden_layers(model)``, the
    units where ``keep`` is True: rows (output channels) of the layer, entries of its BatchNorm,
    columns (input channels, or blocks of columns after a Flatten) of the next layer. Other modules
    are shared, not copied (they hold no parameters); the ``arch`` attribute of ``build_model``
    is copied over."""
    layers = hidden_layers(model)
    if len(keep) != len(layers):
        raise ValueError(f"need one unit mask per hidden layer ({len(layers)}), got {len(keep)}")
    children = list(model)
    rows: dict[int, Tensor] = {}
    cols: dict[int, Tensor] = {}
    norms: dict[int, Tensor] = {}
    for hidden, mask in zip(layers, keep):
        mask = mask.bool()
        rows[hidden.layer] = mask
        cols[hidden.next] = mask.repeat_interleave(hidden.block) if hidden.block > 1 else mask
        if hidden.norm is not None:
            norms[hidden.norm] = mask
    new_children: list[nn.Module] = []
    for i, module in enumerate(children):
        if i in rows or i in cols:
            new_children.append(_slice_layer(module, rows.get(i), cols.get(i)))
        elif i in norms:
            new_children.append(_slice_norm(module, norms[i]))
        else:
            new_children.append(module)
    smaller = nn.Sequential(*new_children)
    smaller.train(model.training)
    if hasattr(model, "arch"):  # the build arguments that export reads (widths come off the layers)
        smaller.arch = dict(model.arch)
    return smaller
