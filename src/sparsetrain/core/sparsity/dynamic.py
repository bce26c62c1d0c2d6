"""Dynamic sparse training: a constant density from the first step, the mask moving during training.

- :class:`SETPruner` (``sparsity.pruning: set``, Mocanu et al. 2018): drop the smallest-magnitude
  active weights, regrow as many inactive ones at random.
- :class:`RigLPruner` (``rigl``, Evci et al. 2020): the same drop, regrow the inactive weights of
  largest dense-gradient magnitude (the gradient of the step just taken, before masking).

Each layer starts from a random mask at its density (``layer_densities``: uniform or ERK, with a
floor); every ``update_every`` optimizer steps a fraction of each layer's active weights, on a cosine
decay from ``drop_fraction`` to 0 at ``end`` of the steps (RigL stops at 75%), is dropped and as many
are regrown, so each layer keeps exactly its count. Regrown weights start at exactly zero and the
optimizer state (momentum, Adam moments) of dropped and regrown entries is reset to zero, so a
weight's history does not leak into a new connection. A gradient hook zeroes masked gradients (the
optimizer never accumulates state for them) and ``after_step`` re-applies the masks.

The trainer binds the optimizer and the number of steps (:meth:`DynamicPruner.bind_optimizer`);
unbound, the masks stay at their random start (static sparse training).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from sparsetrain.core.sparsity.masks import layer_densities, n_keep
from sparsetrain.errors import SparsetrainError


class RecordingMask:
    """Gradient hook ``grad -> grad * mask`` that can keep the dense gradient first, for RigL's
    regrowth; picklable, unlike a lambda. Kept signed, so that data-parallel ranks can average it."""

    def __init__(self, mask: Tensor) -> None:
        self.mask = mask
        self.record = False
        self.grad: Tensor | None = None

    def __call__(self, grad: Tensor) -> Tensor:
        if self.record:
            self.grad = grad.detach().float()
        return grad.masked_fill(~self.mask, 0.0)


def reset_optimizer_state(optimizer: torch.optim.Optimizer | None, param: Tensor, where: Tensor) -> None:
    """Zero the per-entry optimizer state (momentum buffer, Adam moments) of ``param`` at ``where``."""
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.masked_fill_(where, 0)


def _lowest(scores: Tensor, allowed: Tensor, k: int) -> Tensor:
    """Mask of the ``k`` lowest scores among the ``allowed`` entries."""
    ranked = torch.where(allowed, scores, torch.full_like(scores, math.inf)).flatten()
    out = torch.zeros(ranked.numel(), dtype=torch.bool, device=scores.device)
    out[torch.topk(ranked, k, largest=False, sorted=False).indices] = True
    return out.view(scores.shape)


def _highest(scores: Tensor, allowed: Tensor, k: int) -> Tensor:
    return _lowest(-scores, allowed, k)


@dataclass(eq=True, kw_only=True)
class DynamicPruner:
    """Drop by magnitude and regrow (the rule is the subclass's) at a constant per-layer density."""

    density: float = 0.1
    update_every: int = 100
    layer_density: Literal["uniform", "erk"] = "uniform"
    min_layer_density: float = 0.0
    end: float = 0.75
    drop_fraction: float = 0.3
    needs_gradient: ClassVar[bool] = False  # RigL: keep the dense gradient of each update step
    _weights: list[nn.Parameter] = field(default_factory=list, init=False, repr=False, compare=False)
    _hooks: list[RecordingMask] = field(default_factory=list, init=False, repr=False, compare=False)
    _handles: list = field(default_factory=list, init=False, repr=False, compare=False)
    _optimizer: torch.optim.Optimizer | None = field(default=None, init=False, repr=False, compare=False)
    _total_steps: int = field(default=0, init=False, repr=False, compare=False)
    _step: int = field(default=0, init=False, repr=False, compare=False)
    _generator: torch.Generator | None = field(default=None, init=False, repr=False, compare=False)
    #: per layer, the (dropped, regrown) masks of the last update; for tests and diagnostics
    last_update: list[tuple[Tensor, Tensor]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        n_keep(1, self.density)  # validates sparsity.target_density
        every = self.update_every
        if isinstance(every, bool) or not (isinstance(every, int) and every >= 1):
            raise SparsetrainError(f"sparsity.update_every must be an integer >= 1, got {every!r}")
        if not 0.0 < self.end <= 1.0:
            raise SparsetrainError(f"sparsity.prune_end must be in (0, 1], got {self.end!r}")
        if not 0.0 <= self.drop_fraction < 1.0:
            raise SparsetrainError(f"the drop fraction must be in [0, 1), got {self.drop_fraction!r}")
        layer_densities([(1,)], self.density, self.layer_density, self.min_layer_density)  # validates both

    @property
    def masks(self) -> list[Tensor]:
        return [hook.mask for hook in self._hooks]

    def total_epochs(self, epochs: int) -> int:
        return epochs

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None:
        """Random masks at each layer's density, drawn from torch's global RNG (seeded by the trainer)."""
        self._weights = list(weights)
        self._generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        densities = layer_densities([w.shape for w in self._weights], self.density, self.layer_density,
                                    self.min_layer_density)
        self._hooks, self._handles, self._step, self.last_update = [], [], 0, []
        for w, density in zip(self._weights, densities):
            scores = torch.rand(w.shape, generator=self._generator).to(w.device)
            mask = _highest(scores, torch.ones_like(scores, dtype=torch.bool), n_keep(w.numel(), density))
            hook = RecordingMask(mask)
            self._hooks.append(hook)
            if w.requires_grad:
                self._handles.append(w.register_hook(hook))
        self._apply()

    def bind_optimizer(self, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        """The optimizer whose state to reset, and the steps the cosine decay spans."""
        self._optimizer, self._total_steps, self._step = optimizer, int(total_steps), 0
        self._set_recording()

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None:
        self._apply()

    def after_step(self) -> None:
        self._step += 1
        self._apply()
        if self._is_update(self._step):
            self.update(self.drop_fraction_at(self._step))
        self._set_recording()

    def frozen_from(self, total_epochs: int) -> int:
        """The first epoch with no mask update (updates stop at ``end`` of the steps)."""
        return max(0, min(math.ceil(self.end * total_epochs), total_epochs - 1))

    def finalize(self, model: nn.Module) -> nn.Module:
        self._apply()
        for handle in self._handles:
            handle.remove()
        for hook in self._hooks:
            hook.record, hook.grad = False, None
        self._handles, self._weights, self.last_update = [], [], []
        self._optimizer, self._generator = None, None
        return model

    # --- the schedule and the update ------------------------------------------------------------

    def _is_update(self, step: int) -> bool:
        return self._total_steps > 0 and step % self.update_every == 0 and step < self.end * self._total_steps

    def drop_fraction_at(self, step: int) -> float:
        """Cosine decay (Evci et al. 2020): ``drop_fraction / 2 * (1 + cos(pi * t / T_end))``."""
        return self.drop_fraction / 2 * (1.0 + math.cos(math.pi * step / (self.end * self._total_steps)))

    def update(self, fraction: float) -> None:
        """Drop ``fraction`` of each layer's active weights by magnitude, regrow as many among the
        entries inactive before the drop; regrown weights and the state of both are zeroed."""
        self.last_update = []
        with torch.no_grad():
            for i, (w, hook) in enumerate(zip(self._weights, self._hooks)):
                active = hook.mask
                inactive = ~active
                k = min(round(fraction * int(active.sum())), int(inactive.sum()))
                if k == 0:
                    self.last_update.append((torch.zeros_like(active), torch.zeros_like(active)))
                    continue
                dropped = _lowest(w.detach().abs(), active, k)
                grown = _highest(self.grow_scores(i, w), inactive, k)
                hook.mask = (active & ~dropped) | grown
                w.masked_fill_(dropped | grown, 0.0)
                reset_optimizer_state(self._optimizer, w, dropped | grown)
                self.last_update.append((dropped, grown))
        self._apply()

    def grow_scores(self, index: int, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def recorded_gradients(self) -> list[Tensor]:
        """The dense gradients kept for this step's update (RigL): data-parallel training averages
        them over the ranks before :meth:`after_step` regrows from them."""
        return [hook.grad for hook in self._hooks if hook.grad is not None]

    def _set_recording(self) -> None:
        """RigL needs the dense gradient of the step that ends in an update, and only that one."""
        record = self.needs_gradient and self._is_update(self._step + 1)
        for hook in self._hooks:
            hook.record = record
            if not record:
                hook.grad = None

    def _apply(self) -> None:
        with torch.no_grad():
            for w, hook in zip(self._weights, self._hooks):
                w.masked_fill_(~hook.mask, 0.0)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        # hooks, the optimizer and the generator do not survive pickling; a copy holds masks only
        state["_handles"], state["_optimizer"], state["_generator"] = [], None, None
        return state


@dataclass(eq=True, kw_only=True)
class SETPruner(DynamicPruner):
    """Mocanu et al. 2018 ("Scalable training of artificial neural networks with adaptive sparse
    connectivity"): regrow at random."""

    def grow_scores(self, index: int, weight: Tensor) -> Tensor:
        return torch.rand(weight.shape, generator=self._generator).to(weight.device)


@dataclass(eq=True, kw_only=True)
class RigLPruner(DynamicPruner):
    """Evci et al. 2020 ("Rigging the Lottery"): regrow where the dense gradient is largest."""

    needs_gradient: ClassVar[bool] = True

    def grow_scores(self, index: int, weight: Tensor) -> Tensor:
        grad = self._hooks[index].grad
        return torch.zeros_like(weight, dtype=torch.float32) if grad is None else grad.abs()
