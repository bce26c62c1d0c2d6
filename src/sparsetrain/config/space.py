"""The search space of a sweep, as plain values: what may vary, how a trial is named, and which
trials are Pareto-optimal in (objective, density).

Pure Python (no Optuna, MLflow or Kedro): ``config.py`` builds these specs from
``sweep.space`` and the sweep pipeline turns them into Optuna suggestions.

- :class:`Choice`: a categorical list (``sparsity.penalty: [l1, l0]``).
- :class:`Range`: a numeric interval ``{low, high, log, step}``; integer when the parameter is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["maximize", "minimize"]

# Objectives the sweep can optimise: the validation metrics that evaluation computes, the
# validation loss at the best epoch, and the cross-validated ones: ``cv_val_accuracy`` is the mean
# of val_accuracy over the held-out parts of ``evaluation.cv_folds`` folds (x cv_repeats).
CLASSIFICATION_OBJECTIVES = ("val_accuracy", "val_f1_macro", "val_precision_macro", "val_recall_macro")
REGRESSION_OBJECTIVES = ("val_r2", "val_rmse")
CV_PREFIX = "cv_"
CV_CLASSIFICATION_OBJECTIVES = tuple(CV_PREFIX + name for name in CLASSIFICATION_OBJECTIVES)
CV_REGRESSION_OBJECTIVES = tuple(CV_PREFIX + name for name in REGRESSION_OBJECTIVES)
OBJECTIVES = (
    CLASSIFICATION_OBJECTIVES + REGRESSION_OBJECTIVES + ("val_loss",)
    + CV_CLASSIFICATION_OBJECTIVES + CV_REGRESSION_OBJECTIVES
)


def is_cv_objective(objective: str) -> bool:
    """A cross-validated objective (``cv_val_accuracy``): a trial is scored over folds."""
    return objective.startswith(CV_PREFIX)


@dataclass(frozen=True)
class Choice:
    """A categorical parameter: one of ``values`` (any YAML value, lists included)."""

    values: tuple[Any, ...]

    def grid(self) -> tuple[Any, ...]:
        return self.values


@dataclass(frozen=True)
class Range:
    """A numeric interval ``[low, high]``: log-uniform when ``log``, on a lattice when ``step``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def grid(self) -> tuple[float, ...]:
        """``low, low + step, ...`` up to ``high``: the points a grid sampler visits."""
        if self.step is None:
            raise ValueError("a range without step has no grid")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        points = [self.low + i * self.step for i in range(count)]
        if self.integer:
            return tuple(int(round(p)) for p in points)
        return tuple(float(round(p, 12)) for p in points)


ParamSpec = Choice | Range


def direction(objective: str) -> Direction:
    """Losses and errors are minimised; every other metric is maximised."""
    return "minimize" if any(word in objective for word in ("loss", "rmse", "error")) else "maximize"


def grid_space(space: Mapping[str, ParamSpec]) -> dict[str, list[Any]]:
    """Every parameter's grid values, encoded as :func:`encode` does for the sampler."""
    return {key: [encode(v) for v in spec.grid()] for key, spec in space.items()}


def grid_size(space: Mapping[str, ParamSpec]) -> int:
    return math.prod(len(spec.grid()) for spec in space.values())


def encode(value: Any) -> Any:
    """Samplers take scalars only: a list value (``model.hidden: [[64], [128, 64]]``) travels as
    its JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def decode(spec: ParamSpec, value: Any) -> Any:
    """Inverse of :func:`encode` for a value of ``spec``."""
    if isinstance(spec, Choice) and isinstance(value, str) and value not in spec.values:
        return json.loads(value)
    return value


def _short(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def run_name(flat: Mapping[str, Any], swept: Iterable[str] = ()) -> str:
    """``mlp-l0-3e-04-kaiming_normal``: model kind, penalty, strength and init, then any other
    swept parameter as ``leaf=value``."""
    parts = [
        str(flat["model.kind"]),
        str(flat["sparsity.penalty"]),
        f"{float(flat['sparsity.strength']):.0e}",
        str(flat["model.init"]),
    ]
    named = {"model.kind", "sparsity.penalty", "sparsity.strength", "model.init"}
    parts += [f"{key.rsplit('.', 1)[-1]}={_short(flat[key])}" for key in swept if key not in named]
    return "-".join(parts)


def pareto_mask(objective: Sequence[float], density: Sequence[float], maximize: bool = True) -> list[bool]:
    """True for the points no other point dominates: better or equal objective at lower or equal
    density, strictly better in one of them."""
    sign = 1.0 if maximize else -1.0
    points = [(sign * o, d) for o, d in zip(objective, density)]
    mask = []
    for i, (oi, di) in enumerate(points):
        dominated = any(
            oj >= oi and dj <= di and (oj > oi or dj < di) for j, (oj, dj) in enumerate(points) if j != i
        )
        mask.append(not dominated)
    return mask
