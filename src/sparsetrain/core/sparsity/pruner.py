"""The pruning driver contract the trainer calls, and the pruners that implement it.

A pruner keeps *what* to prune (a mask rule, ``masks.py``) apart from *how much and when*
(a schedule, ``schedules.py``); this module drives both through the training loop. Masks only
shrink, and masked weights stay exactly zero through every optimizer step: a gradient hook on each
masked parameter zeroes its masked gradient entries (so plain SGD never moves them), and
``after_step`` re-applies the masks (momentum and Adam move weights even at zero gradient, from
their running averages).

Masks are plain boolean tensors held by the pruner; the hooks are small callable objects, not
lambdas, and ``finalize`` removes them and drops every reference to the model, so a pruner pickles
before ``attach`` and after ``finalize``.

- :class:`ThresholdPruner` (``sparsity.pruning: threshold``): after training, zero the weights with
  ``|w| < threshold``, then fine-tune ``finetune_epochs`` with the mask fixed (Han et al. 2015).
- :class:`MagnitudePruner` (``gmp``): gradual magnitude pruning to exactly the target density
  along a schedule (cubic, Zhu & Gupta 2017), layer-wise or global; the epochs after the schedule's
  end fine-tune with the masks fixed.
- :class:`StructuredPruner` (``structured``): mask whole hidden units (neurons and convolution
  channels) by norm, gradually along the same kind of schedule, fine-tune ``finetune_epochs`` with
  the unit mask fixed, then return a physically smaller dense network (``surgery.py`` slices it).
- :class:`~sparsetrain.core.sparsity.dynamic.SETPruner` / ``RigLPruner`` (``set`` / ``rigl``):
  dynamic sparse training at a constant density from the first step (``dynamic.py``).
- :class:`NMPruner` (``nm``): N:M semi-structured masks (2:4), fixed from the start.

:func:`make_pruner` builds one by name from the values of the ``sparsity`` keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from sparsetrain.core.sparsity.dynamic import RigLPruner, SETPruner
from sparsetrain.core.sparsity.masks import (
    floor_mask,
    global_magnitude_masks,
    magnitude_mask,
    nm_mask,
    threshold_mask,
    unit_mask,
    unit_scores,
)
from sparsetrain.core.sparsity.schedules import CubicSchedule, Schedule
from sparsetrain.core.sparsity.surgery import hidden_layers, shrink
from sparsetrain.errors import SparsetrainError


@runtime_checkable
class Pruner(Protocol):
    """What the trainer calls, in this order.

    - ``total_epochs(epochs)``: how many epochs to run in all (training plus any fine-tuning).
    - ``attach(model, weights)``: once, before the optimizer exists.
    - ``on_epoch_start(epoch, total_epochs)``: update the masks by the schedule, zero the weights.
    - ``after_step()``: after every optimizer (and prox) step, re-apply the masks.
    - ``frozen_from(total_epochs)``: first epoch at which masks no longer change; early stopping
      and best-epoch tracking only count from there.
    - ``finalize(model)``: make the pruning permanent; may return a physically smaller network.
    """

    def total_epochs(self, epochs: int) -> int: ...

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None: ...

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None: ...

    def after_step(self) -> None: ...

    def frozen_from(self, total_epochs: int) -> int: ...

    def finalize(self, model: nn.Module) -> nn.Module: ...


@runtime_checkable
class StepPruner(Protocol):
    """A pruner that counts optimizer steps and edits the optimizer's state (``set``, ``rigl``): the
    trainer calls ``bind_optimizer(optimizer, total_steps)`` once, after creating the optimizer;
    data-parallel training averages ``recorded_gradients()`` over the ranks after each backward."""

    def bind_optimizer(self, optimizer: torch.optim.Optimizer, total_steps: int) -> None: ...

    def recorded_gradients(self) -> list[Tensor]: ...


class NoPruning:
    """Train without masks."""

    def total_epochs(self, epochs: int) -> int:
        return epochs

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None:
        return None

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        return None

    def after_step(self) -> None:
        return None

    def frozen_from(self, total_epochs: int) -> int:
        return 0

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def __eq__(self, other: object) -> bool:
        return type(other) is NoPruning

    def __hash__(self) -> int:
        return hash(NoPruning)

    def __repr__(self) -> str:
        return "NoPruning()"


class MaskGradient:
    """Gradient hook ``grad -> grad * mask``: masked entries get no gradient (picklable)."""

    def __init__(self, mask: Tensor) -> None:
        self.mask = mask

    def __call__(self, grad: Tensor) -> Tensor:
        return grad.masked_fill(~self.mask, 0.0)


class MaskSet:
    """Keep-masks on parameters, with the gradient hooks that enforce them.

    ``update`` intersects a parameter's mask with a new one (masks only shrink), ``apply`` zeroes
    the masked entries, ``release`` removes the hooks.
    """

    def __init__(self) -> None:
        self.params: list[Tensor] = []
        self.hooks: list[MaskGradient] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def masks(self) -> list[Tensor]:
        return [hook.mask for hook in self.hooks]

    def mask_of(self, param: Tensor) -> Tensor | None:
        for p, hook in zip(self.params, self.hooks):
            if p is param:
                return hook.mask
        return None

    def update(self, param: Tensor, mask: Tensor) -> None:
        mask = mask.to(device=param.device, dtype=torch.bool)
        if mask.shape != param.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match parameter {tuple(param.shape)}")
        for p, hook in zip(self.params, self.hooks):
            if p is param:
                hook.mask = hook.mask & mask
                return
        hook = MaskGradient(mask.clone())
        self.params.append(param)
        self.hooks.append(hook)
        if param.requires_grad:
            self._handles.append(param.register_hook(hook))

    def apply(self) -> None:
        with torch.no_grad():
            for p, hook in zip(self.params, self.hooks):
                p.masked_fill_(~hook.mask, 0.0)

    def release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.params = []

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = []  # hooks do not survive pickling; a copy holds masks only
        return state

    def __len__(self) -> int:
        return len(self.params)


def training_fraction(epoch: int, total_epochs: int) -> float:
    """Epoch ``0`` is fraction 0, the last epoch fraction 1."""
    return 1.0 if total_epochs <= 1 else min(1.0, epoch / (total_epochs - 1))


def _check_finetune(value: int) -> None:
    if isinstance(value, bool) or not (isinstance(value, int) and value >= 0):
        raise SparsetrainError(f"sparsity.finetune_epochs must be an integer >= 0, got {value!r}")


def _check_floor(value: float, density: float) -> None:
    if not 0.0 <= value <= density:
        raise SparsetrainError(f"sparsity.min_layer_density must be in [0, {density!r}], got {value!r}")


def _first_epoch_at(fraction: float, epochs: int) -> int:
    """The first of ``epochs`` training epochs whose training fraction reaches ``fraction``."""
    for epoch in range(epochs):
        if training_fraction(epoch, epochs) >= fraction:
            return epoch
    return max(epochs - 1, 0)


@dataclass(eq=True, kw_only=True)
class ThresholdPruner:
    """Han et al. 2015 ("Learning both Weights and Connections for Efficient Neural Networks"):
    train, zero every prunable weight with ``|w| < threshold``, then fine-tune the rest
    ``finetune_epochs`` with the mask fixed.

    The threshold is applied once, at the start of the first fine-tuning epoch; early stopping
    counts from there. With ``finetune_epochs = 0`` it is applied in ``finalize``, to the best
    (early-stopped) weights. Combine it with an L1 penalty during training to push weights below
    the threshold first. ``min_layer_density``: each layer keeps at least that fraction of its
    largest weights, whatever the threshold."""

    threshold: float = 1e-3
    finetune_epochs: int = 5
    min_layer_density: float = 0.0
    _masks: MaskSet = field(default_factory=MaskSet, init=False, repr=False, compare=False)
    _weights: list[nn.Parameter] = field(default_factory=list, init=False, repr=False, compare=False)
    _pruned: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_finetune(self.finetune_epochs)
        if not (0.0 <= self.threshold < math.inf):
            raise SparsetrainError(f"sparsity.threshold must be a finite number >= 0, got {self.threshold!r}")
        _check_floor(self.min_layer_density, 1.0)

    @property
    def masks(self) -> list[Tensor]:
        return self._masks.masks

    def total_epochs(self, epochs: int) -> int:
        return epochs + self.finetune_epochs

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None:
        self._weights = list(weights)
        self._pruned = False

    def prune(self) -> None:
        """Zero the weights below the threshold, and keep them zero from now on."""
        for w in self._weights:
            current = self._masks.mask_of(w)
            mask = threshold_mask(w, self.threshold, current) | floor_mask(w, self.min_layer_density, current)
            self._masks.update(w, mask)
        self._masks.apply()
        self._pruned = True

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        if self.finetune_epochs > 0 and epoch == total_epochs - self.finetune_epochs and not self._pruned:
            self.prune()

    def after_step(self) -> None:
        self._masks.apply()

    def frozen_from(self, total_epochs: int) -> int:
        return total_epochs - self.finetune_epochs if self.finetune_epochs > 0 else 0

    def finalize(self, model: nn.Module) -> nn.Module:
        if not self._pruned and self._weights:
            self.prune()
        self._masks.apply()
        self._masks.release()
        self._weights = []
        return model


@dataclass(eq=True)
class MagnitudePruner:
    """Gradual magnitude pruning (Zhu & Gupta 2017) of all prunable weights.

    At the start of each epoch the schedule gives the density for that point of training
    (epoch ``t`` of ``T`` is fraction ``t / (T - 1)``) and the mask keeps exactly
    ``round(density * n)`` weights of largest magnitude among those still kept: per layer
    (``scope="layer"``, each layer ``n`` of its own) or over all layers together (``"global"``).
    From the schedule's ``end`` on the masks are fixed and the remaining epochs fine-tune.
    ``min_layer_density`` is a per-layer floor (each layer keeps at least that fraction of its largest
    weights): at 2% global pruning once cut a layer to almost nothing and the run collapsed.
    """

    schedule: Schedule
    scope: Literal["layer", "global"] = "layer"
    min_layer_density: float = 0.0
    _masks: MaskSet = field(default_factory=MaskSet, init=False, repr=False, compare=False)
    _weights: list[nn.Parameter] = field(default_factory=list, init=False, repr=False, compare=False)
    _density: float = field(default=1.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.scope not in ("layer", "global"):
            raise SparsetrainError(f"sparsity.scope must be 'layer' or 'global', got {self.scope!r}")
        _check_floor(self.min_layer_density, self.schedule(1.0))

    @property
    def masks(self) -> list[Tensor]:
        return self._masks.masks

    def total_epochs(self, epochs: int) -> int:
        return epochs

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None:
        self._weights = list(weights)
        self._density = 1.0

    def prune_to(self, density: float) -> None:
        """Shrink the masks to ``density`` (no-op if they are already that sparse)."""
        if density >= self._density or not self._weights:
            return
        current = [self._masks.mask_of(w) for w in self._weights]
        if self.scope == "global":
            masks = global_magnitude_masks(self._weights, density, current, self.min_layer_density)
        else:
            floored = max(density, self.min_layer_density)
            masks = [magnitude_mask(w, floored, m) for w, m in zip(self._weights, current)]
        for w, mask in zip(self._weights, masks):
            self._masks.update(w, mask)
        self._masks.apply()
        self._density = density

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        self.prune_to(self.schedule(training_fraction(epoch, total_epochs)))

    def after_step(self) -> None:
        self._masks.apply()

    def frozen_from(self, total_epochs: int) -> int:
        return _first_epoch_at(self.schedule.end, total_epochs)

    def finalize(self, model: nn.Module) -> nn.Module:
        self.prune_to(self.schedule(1.0))  # already there after a full run; a safeguard
        self._masks.apply()
        self._masks.release()
        self._weights = []
        return model


# --- structured pruning ---------------------------------------------------------------------------


def _raw_weight(module: nn.Module) -> Tensor:
    """The trained weight tensor, under any parametrization (L0 gates) that may sit on it."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations["weight"].original
    return module.weight


def _units_axis(mask: Tensor, param: Tensor, axis: int, block: int = 1) -> Tensor:
    """Broadcast a unit mask along ``axis`` of ``param`` (each unit covering ``block`` entries)."""
    if block > 1:
        mask = mask.repeat_interleave(block)
    shape = [1] * param.dim()
    shape[axis] = mask.numel()
    return mask.view(shape).expand_as(param)


@dataclass(eq=True)
class StructuredPruner:
    """Remove whole hidden units (neurons, and convolution channels) by norm.

    The unit density follows ``schedule`` over the training epochs (the cubic schedule of Zhu &
    Gupta 2017 by default, as for ``gmp``, but counting units): at the start of each epoch every
    hidden layer keeps its ``round(density * units)`` units of highest
    :func:`~sparsetrain.core.sparsity.masks.unit_scores` (incoming norm, or BatchNorm scale, times
    outgoing norm) among those still kept. A removed unit is masked: its incoming row, bias,
    BatchNorm scale and shift and its outgoing column (or channel) are zero and get no gradient,
    so the trainer's optimizer keeps working on the original parameters. After the training
    epochs, ``finetune_epochs`` more run with the unit mask fixed; ``finalize`` then slices the
    network into a physically smaller dense one (fewer rows, columns and channels; BatchNorm
    sliced too) whose outputs equal the masked network's, and which is faster at every batch size.

    Gradual removal, not one shot after training: on digits (MLP [64] -> 16 units, 8 + 5 epochs)
    one-shot pruning left the cosine schedule's tail too small a learning rate to recover
    (0.76-0.93 test accuracy over seeds) where gradual removal reached 0.92-0.95.

    The output layer and the inputs are never pruned; units are ranked per layer, whatever
    ``sparsity.scope`` says; a model without hidden layers (``linear``) comes back unchanged.
    For the CNN, convolution channels are pruned too (through the Flatten, a channel owns its
    block of the first fully connected layer's columns).
    """

    schedule: Schedule
    finetune_epochs: int = 5
    _masks: MaskSet = field(default_factory=MaskSet, init=False, repr=False, compare=False)
    _model: nn.Module | None = field(default=None, init=False, repr=False, compare=False)
    _keep: list[Tensor] = field(default_factory=list, init=False, repr=False, compare=False)
    _density: float = field(default=1.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_finetune(self.finetune_epochs)

    @property
    def masks(self) -> list[Tensor]:
        return self._masks.masks

    @property
    def unit_masks(self) -> list[Tensor]:
        """The kept units of each hidden layer (after pruning)."""
        return list(self._keep)

    def total_epochs(self, epochs: int) -> int:
        return epochs + self.finetune_epochs

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None:
        hidden_layers(model)  # fail before training on a layout it cannot slice
        self._model = model
        self._keep = []
        self._density = 1.0

    def prune_to(self, density: float) -> None:
        """Shrink every hidden layer to ``density`` of its units (no-op if already that small)."""
        if self._model is None or density >= self._density:
            return
        children = list(self._model)
        layers = hidden_layers(self._model)
        current = self._keep or [None] * len(layers)
        self._keep = []
        for hidden, kept in zip(layers, current):
            layer, reader = children[hidden.layer], children[hidden.next]
            norm = children[hidden.norm] if hidden.norm is not None else None
            w_in, w_out = _raw_weight(layer), _raw_weight(reader)
            units = w_in.shape[0]
            scale = norm.weight if norm is not None and norm.affine else None
            scores = unit_scores(w_in, w_out.reshape(w_out.shape[0], units, -1), scale)
            keep = unit_mask(scores, density, kept)
            self._keep.append(keep)
            self._masks.update(w_in, _units_axis(keep, w_in, 0))
            if layer.bias is not None:
                self._masks.update(layer.bias, keep)
            if scale is not None:
                self._masks.update(norm.weight, keep)
                self._masks.update(norm.bias, keep)
            self._masks.update(w_out, _units_axis(keep, w_out, 1, hidden.block))
        self._masks.apply()
        self._density = density

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        training = total_epochs - self.finetune_epochs
        fraction = training_fraction(epoch, training) if epoch < training else 1.0
        self.prune_to(self.schedule(fraction))

    def after_step(self) -> None:
        self._masks.apply()

    def frozen_from(self, total_epochs: int) -> int:
        return _first_epoch_at(self.schedule.end, total_epochs - self.finetune_epochs)

    def finalize(self, model: nn.Module) -> nn.Module:
        self.prune_to(self.schedule(1.0))
        self._masks.apply()
        self._masks.release()
        keep, self._keep, self._model = self._keep, [], None
        if not keep:
            return model
        return shrink(model, keep)


# --- N:M semi-structured ------------------------------------------------------------------------


@dataclass(eq=True, kw_only=True)
class NMPruner:
    """N:M semi-structured sparsity (``sparsity.pruning: nm``, 2:4 by default): every group of ``m``
    consecutive input weights keeps its ``n`` largest (:func:`~sparsetrain.core.sparsity.masks.nm_mask`),
    the pattern the 2:4 sparse tensor cores run. The mask is taken once, at the first epoch whose
    training fraction reaches ``start`` (``sparsity.prune_start``: 0 masks from the first step, more
    trains dense for a short warm-up so the magnitudes mean something), then fixed."""

    n: int = 2
    m: int = 4
    start: float = 0.0
    _masks: MaskSet = field(default_factory=MaskSet, init=False, repr=False, compare=False)
    _weights: list[nn.Parameter] = field(default_factory=list, init=False, repr=False, compare=False)
    _pruned: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int) and 1 <= self.n < self.m):
            raise SparsetrainError(
                f"sparsity.n and sparsity.m must be integers, 1 <= n < m, got {self.n!r}:{self.m!r}"
            )
        if not 0.0 <= self.start < 1.0:
            raise SparsetrainError(f"sparsity.prune_start must be in [0, 1), got {self.start!r}")

    @property
    def masks(self) -> list[Tensor]:
        return self._masks.masks

    def total_epochs(self, epochs: int) -> int:
        return epochs

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None:
        self._weights = list(weights)
        self._pruned = False

    def prune(self) -> None:
        for w in self._weights:
            self._masks.update(w, nm_mask(w, self.n, self.m))
        self._masks.apply()
        self._pruned = True

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        if not self._pruned and training_fraction(epoch, total_epochs) >= self.start:
            self.prune()

    def after_step(self) -> None:
        self._masks.apply()

    def frozen_from(self, total_epochs: int) -> int:
        return _first_epoch_at(self.start, total_epochs)

    def finalize(self, model: nn.Module) -> nn.Module:
        if not self._pruned and self._weights:
            self.prune()
        self._masks.apply()
        self._masks.release()
        self._weights = []
        return model


PRUNING_METHODS = ("none", "threshold", "gmp", "structured", "set", "rigl", "nm")


def make_pruner(
    method: str,
    *,
    target_density: float = 0.1,
    threshold: float = 1e-3,
    scope: Literal["layer", "global"] = "global",
    prune_start: float = 0.0,
    prune_end: float = 0.75,
    finetune_epochs: int = 5,
    update_every: int = 100,
    layer_density: Literal["uniform", "erk"] = "uniform",
    min_layer_density: float = 0.0,
    n: int = 2,
    m: int = 4,
) -> Pruner:
    """The pruner that ``sparsity.pruning`` names (one of :data:`PRUNING_METHODS`); the keywords
    are the other ``sparsity`` keys, with their defaults, and each method reads those it needs."""
    if method not in PRUNING_METHODS:
        raise SparsetrainError(
            f"sparsity.pruning '{method}' is unknown; choose one of {', '.join(PRUNING_METHODS)}"
        )
    if method == "none":
        return NoPruning()
    if method == "threshold":
        return ThresholdPruner(threshold=threshold, finetune_epochs=finetune_epochs,
                               min_layer_density=min_layer_density)
    if method in ("set", "rigl"):
        dynamic = SETPruner if method == "set" else RigLPruner
        return dynamic(density=target_density, update_every=update_every, layer_density=layer_density,
                       min_layer_density=min_layer_density, end=prune_end)
    if method == "nm":
        return NMPruner(n=n, m=m, start=prune_start)
    schedule = CubicSchedule(final_density=target_density, start=prune_start, end=prune_end)
    if method == "gmp":
        return MagnitudePruner(schedule, scope=scope, min_layer_density=min_layer_density)
    return StructuredPruner(schedule, finetune_epochs=finetune_epochs)
