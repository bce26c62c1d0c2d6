"""Sparsity-inducing penalties as small value objects of pure maths.

A penalty is ``strength * R(w)`` on the prunable weights of a model (weight matrices and
convolution kernels, never biases). It knows

- ``value(w)``: ``strength * R(w)`` for one tensor;
- ``prox(w, step)``: the proximal operator of ``step * strength * R`` (``argmin_z 1/2 |z - w|^2 +
  step * strength * R(z)``), which the trainer applies after every optimizer step: this is what
  gives exact zeros, where a subgradient step only gives small weights;
- ``support(w)``: the (generalized) support, the entries or groups that are nonzero;
- ``strength_max(grad0)``: for a linear model, the smallest strength at which ``w = 0`` is optimal,
  given the gradient of the data term at ``w = 0`` (a regularization path starts there);
- ``targets(n)``: which of the ``n`` prunable weight tensors it acts on (all by default).

Penalties that need more than a prox (L0 gates) override the training hooks ``attach``,
``regularization`` and ``finalize``; the trainer calls those on every penalty, so it never branches
on the concrete class. All penalties are frozen dataclasses so that they pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from sparsetrain.errors import SparsetrainError


@runtime_checkable
class Penalty(Protocol):
    """The contract every penalty implements; see the module docstring."""

    name: ClassVar[str]
    strength: float

    def value(self, w: Tensor) -> Tensor: ...

    def prox(self, w: Tensor, step: float) -> Tensor: ...

    def support(self, w: Tensor) -> Tensor: ...

    def strength_max(self, grad0: Tensor) -> float: ...

    def targets(self, n_weights: int) -> list[int]: ...

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None: ...

    def regularization(self, model: nn.Module) -> Tensor | float: ...

    def finalize(self, model: nn.Module) -> None: ...


@dataclass(frozen=True)
class _PenaltyBase:
    """Defaults for the training hooks: a purely proximal penalty needs none of them."""

    strength: float = 0.0

    def __post_init__(self) -> None:
        if not (self.strength >= 0.0 and self.strength < float("inf")):
            raise SparsetrainError(
                f"sparsity.strength must be a finite number >= 0, got {self.strength!r}"
            )

    def targets(self, n_weights: int) -> list[int]:
        return list(range(n_weights))

    def attach(self, model: nn.Module, weights: Sequence[nn.Parameter]) -> None:
        return None

    def regularization(self, model: nn.Module) -> Tensor | float:
        return 0.0

    def finalize(self, model: nn.Module) -> None:
        return None

    def support(self, w: Tensor) -> Tensor:
        return w != 0


@dataclass(frozen=True)
class NoPenalty(_PenaltyBase):
    """No regularization: the dense baseline."""

    name: ClassVar[str] = "none"

    def value(self, w: Tensor) -> Tensor:
        return w.new_zeros(())

    def prox(self, w: Tensor, step: float) -> Tensor:
        return w

    def strength_max(self, grad0: Tensor) -> float:
        return float("inf")


def soft_threshold(w: Tensor, threshold: float) -> Tensor:
    """``sign(w) * max(|w| - threshold, 0)``: the prox of ``threshold * |w|_1``."""
    return torch.sign(w) * torch.clamp(w.abs() - threshold, min=0.0)


@dataclass(frozen=True)
class L1(_PenaltyBase):
    """Lasso: ``strength * |w|_1`` (Tibshirani 1996); its prox is soft-thresholding."""

    name: ClassVar[str] = "l1"

    def value(self, w: Tensor) -> Tensor:
        return self.strength * w.abs().sum()

    def prox(self, w: Tensor, step: float) -> Tensor:
        return soft_threshold(w, step * self.strength)

    def strength_max(self, grad0: Tensor) -> float:
        return float(grad0.abs().max())


@dataclass(frozen=True)
class L2(_PenaltyBase):
    """Ridge / weight decay: ``strength / 2 * |w|_2^2``; shrinks every weight, zeroes none."""

    name: ClassVar[str] = "l2"

    def value(self, w: Tensor) -> Tensor:
        return 0.5 * self.strength * (w * w).sum()

    def prox(self, w: Tensor, step: float) -> Tensor:
        return w / (1.0 + step * self.strength)

    def strength_max(self, grad0: Tensor) -> float:
        # No finite strength makes w = 0 optimal unless the gradient at zero vanishes.
        return 0.0 if float(grad0.abs().max()) == 0.0 else float("inf")


@dataclass(frozen=True)
class ElasticNet(_PenaltyBase):
    """``strength * (l1_ratio |w|_1 + (1 - l1_ratio) / 2 |w|_2^2)`` (Zou & Hastie 2005).

    Same convention as scikit-learn's ``ElasticNet(alpha=strength, l1_ratio=l1_ratio)``.
    """

    name: ClassVar[str] = "elasticnet"
    l1_ratio: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.l1_ratio <= 1.0:
            raise SparsetrainError(f"sparsity.l1_ratio must be in [0, 1], got {self.l1_ratio!r}")

    def value(self, w: Tensor) -> Tensor:
        l1 = w.abs().sum()
        l2 = 0.5 * (w * w).sum()
        return self.strength * (self.l1_ratio * l1 + (1.0 - self.l1_ratio) * l2)

    def prox(self, w: Tensor, step: float) -> Tensor:
        shrunk = soft_threshold(w, step * self.strength * self.l1_ratio)
        return shrunk / (1.0 + step * self.strength * (1.0 - self.l1_ratio))

    def strength_max(self, grad0: Tensor) -> float:
        if self.l1_ratio == 0.0:
            return L2(self.strength).strength_max(grad0)
        return float(grad0.abs().max()) / self.l1_ratio


PENALTIES: dict[str, Callable[..., Penalty]] = {
    "none": lambda strength=0.0, **_: NoPenalty(strength),
    "l1": lambda strength, **_: L1(strength),
    "l2": lambda strength, **_: L2(strength),
    "elasticnet": lambda strength, l1_ratio=0.5, **_: ElasticNet(strength, l1_ratio),
}


def make_penalty(name: str, strength: float, **options: object) -> Penalty:
    """Build a penalty by its config name (``sparsity.penalty``); options are the other keys
    of the ``sparsity`` section that the penalty uses (``l1_ratio``, ``groups``)."""
    try:
        factory = PENALTIES[name]
    except KeyError:
        raise SparsetrainError(
            f"sparsity.penalty '{name}' is unknown; choose one of {', '.join(PENALTIES)}"
        ) from None
    return factory(strength=strength, **options)
