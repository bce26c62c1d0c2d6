"""Density schedules: *how much and when* to prune.

A schedule maps the fraction of training done, ``t`` in ``[0, 1]``, to the density (fraction of
weights kept) the masks should have then. Schedules are frozen dataclasses, not closures, so that
they pickle; ``end`` is the fraction from which the density no longer changes (the pruner fine-tunes
with fixed masks from there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sparsetrain.errors import SparsetrainError


@runtime_checkable
class Schedule(Protocol):
    """``schedule(t)`` is the density at training fraction ``t``; constant for ``t >= end``."""

    end: float

    def __call__(self, fraction: float) -> float: ...


def _check_density(value: float, key: str) -> None:
    if not 0.0 < value <= 1.0:
        raise SparsetrainError(f"{key} must be in (0, 1], got {value!r}")


@dataclass(frozen=True)
class ConstantSchedule:
    """The same density from the start: one-shot pruning before the first epoch."""

    density: float
    end: float = 0.0

    def __post_init__(self) -> None:
        _check_density(self.density, "sparsity.target_density")

    def __call__(self, fraction: float) -> float:
        return self.density


@dataclass(frozen=True, kw_only=True)
class CubicSchedule:
    """Gradual pruning, Zhu & Gupta 2017 ("To prune, or not to prune"), eq. 1, in densities:

    ``d(t) = d_f + (d_i - d_f) * (1 - (t - start) / (end - start))^3`` for ``start <= t <= end``,
    ``d_i`` before ``start`` and ``d_f`` after ``end``. It prunes fast while there are many
    redundant weights and slowly near the target.
    """

    initial_density: float = 1.0
    final_density: float
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        _check_density(self.final_density, "sparsity.target_density")
        _check_density(self.initial_density, "initial_density")
        if self.final_density > self.initial_density:
            raise SparsetrainError(
                f"the final density {self.final_density!r} must not exceed the initial density "
                f"{self.initial_density!r}: masks only shrink"
            )
        if not 0.0 <= self.start < self.end <= 1.0:
            raise SparsetrainError(
                "sparsity.prune_start and sparsity.prune_end must satisfy 0 <= prune_start < prune_end "
                f"<= 1, got {self.start!r} and {self.end!r}"
            )

    def __call__(self, fraction: float) -> float:
        if fraction <= self.start:
            return self.initial_density
        if fraction >= self.end:
            return self.final_density
        remaining = 1.0 - (fraction - self.start) / (self.end - self.start)
        return self.final_density + (self.initial_density - self.final_density) * remaining**3
