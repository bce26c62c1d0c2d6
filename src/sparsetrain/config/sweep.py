"""The sweep grammar (conf/base/parameters_sweep.yml): an Optuna study over dotted parameter paths.

``sweep.space`` is checked key by key against the run sections (:mod:`sparsetrain.config.sections`)
and turned into the plain specs of :mod:`sparsetrain.config.space`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from sparsetrain.config.sections import (
    SECTIONS,
    SparsetrainConfig,
    _describe,
    _Section,
    parse_config,
    parse_section,
    unflatten,
)
from sparsetrain.config.space import (
    CLASSIFICATION_OBJECTIVES,
    CV_CLASSIFICATION_OBJECTIVES,
    CV_REGRESSION_OBJECTIVES,
    OBJECTIVES,
    REGRESSION_OBJECTIVES,
    Choice,
    ParamSpec,
    Range,
    direction,
    is_cv_objective,
)
from sparsetrain.errors import SparsetrainError

_RANGE_KEYS = {"low", "high", "log", "step"}
# Parameters a sweep may not vary: every trial is scored on the same validation split and
# registered under the same name.
_FIXED_SECTIONS = {
    "data": "every trial must be scored on the same validation split",
    "registry": "the best trial is registered under one model name",
    "evaluation": "every trial must be scored the same way (a cv_ objective over the same folds)",
}


def _normalize_space(raw: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys, whether written flat (``sparsity.penalty: [...]``) or nested, as
    ``--params sweep.space.model.init=[...]`` delivers them; a later key wins."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and value and not set(value) & _RANGE_KEYS:
            for sub, leaf in _normalize_space(value).items():
                flat[f"{key}.{sub}"] = leaf
        else:
            flat[str(key)] = value
    return flat


def _numeric_kinds(key: str) -> tuple[bool, bool]:
    """(admits int, admits float) for the parameter at dotted ``key``."""
    import types
    import typing

    section, leaf = key.split(".", 1)
    annotation = SECTIONS[section].model_fields[leaf].annotation

    def kinds(tp: Any) -> set[type]:
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            return set().union(*(kinds(a) for a in typing.get_args(tp)))
        return {tp} if tp in (int, float) else set()

    found = kinds(annotation)
    return int in found, float in found


def _as_number(key: str, name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"sweep.space.{key}: {name} must be a number (got {value!r})")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"sweep.space.{key}: {name} must be a number (got {value!r})") from None
    if not math.isfinite(number):
        raise ValueError(f"sweep.space.{key}: {name} must be finite (got {value!r})")
    return number


def _parse_range(key: str, raw: dict[str, Any]) -> Range:
    unknown = sorted(set(raw) - _RANGE_KEYS)
    if unknown:
        raise ValueError(
            f"sweep.space.{key}: unknown key '{unknown[0]}'; a range has low, high, log and step"
        )
    missing = [name for name in ("low", "high") if raw.get(name) is None]
    if missing:
        raise ValueError(f"sweep.space.{key}: a range needs '{missing[0]}' (give low and high, or a list)")
    admits_int, admits_float = _numeric_kinds(key)
    if not (admits_int or admits_float):
        raise ValueError(f"sweep.space.{key}: is not numeric, so it takes a list of values, not a range")
    low, high = _as_number(key, "low", raw["low"]), _as_number(key, "high", raw["high"])
    step = None if raw.get("step") is None else _as_number(key, "step", raw["step"])
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"sweep.space.{key}: log must be true or false (got {log!r})")
    if low > high:
        raise ValueError(f"sweep.space.{key}: low ({low:g}) must be <= high ({high:g})")
    if log and low <= 0:
        raise ValueError(f"sweep.space.{key}: a log range needs low > 0 (got {low:g})")
    if step is not None and step <= 0:
        raise ValueError(f"sweep.space.{key}: step must be > 0 (got {step:g})")
    if step is not None and log:
        raise ValueError(f"sweep.space.{key}: step and log cannot be combined; list the values instead")
    integral = all(v is None or float(v).is_integer() for v in (low, high, step))
    integer = admits_int and (integral or not admits_float)
    if integer and not integral:
        raise ValueError(f"sweep.space.{key}: is an integer parameter; low, high and step must be integers")
    if integer:
        low, high = int(low), int(high)
        step = None if step is None else int(step)
    return Range(low=low, high=high, log=log, step=step, integer=integer)


def parse_space(raw: Any) -> dict[str, ParamSpec]:
    """``sweep.space`` as specs, or a ValueError naming ``sweep.space.<key>``. Checks the keys
    and the shape of each entry; :func:`parse_sweep` checks the values against the config."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError(
            "sweep.space must map dotted parameter paths to a list of values or a range, "
            "e.g. {sparsity.penalty: [l1, l0], sparsity.strength: {low: 1.0e-5, high: 1.0e-2, log: true}}"
        )
    known = SparsetrainConfig().flat()
    space: dict[str, ParamSpec] = {}
    for key, value in _normalize_space(raw).items():
        section = key.split(".", 1)[0]
        if key not in known:
            raise ValueError(
                f"sweep.space.{key}: unknown parameter path; use a dotted key of "
                "conf/base/parameters_*.yml such as sparsity.strength or model.init"
            )
        if section in _FIXED_SECTIONS:
            raise ValueError(f"sweep.space.{key}: {section}.* cannot be swept: {_FIXED_SECTIONS[section]}")
        if isinstance(value, str) and value.lstrip().startswith("["):
            import yaml

            value = yaml.safe_load(value)  # `--params sweep.space.model.init=[a]` may arrive as text
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(f"sweep.space.{key}: the list of values is empty; give at least one")
            space[key] = Choice(tuple(value))
        elif isinstance(value, dict):
            space[key] = _parse_range(key, value)
        else:
            raise ValueError(
                f"sweep.space.{key}: give a list of values or a range {{low, high, log, step}} "
                f"(got {value!r})"
            )
    return space


class SweepConfig(_Section):
    """An Optuna study over ``space``; schema in design.md, "Sweeps"."""

    study_name: str = Field("sparsetrain-sweep", min_length=1)
    # null = SQLite file under data/; `sqlite:///...`, `postgresql://...`, `mysql://...` (any
    # SQLAlchemy URL) or `journal:<file>` share one study between workers.
    storage: str | None = None
    sampler: Literal["grid", "random", "tpe"] = "tpe"
    n_trials: int | None = Field(20, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    objective: str = "val_accuracy"
    max_density: float | None = Field(None, gt=0.0, le=1.0)
    multi_objective: bool = False
    seed: int | None = 42
    # Seconds between a running trial's heartbeats; a RUNNING trial silent for 2x this long
    # (its worker was killed) is marked FAIL by the next worker that starts a trial.
    heartbeat_s: int = Field(10, ge=1)
    space: dict[str, Any] = Field(default_factory=dict)

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, value: str | None) -> str | None:
        if value is None or value.startswith("journal:") or "://" in value.split("?", 1)[0]:
            return value
        raise ValueError(
            "give an Optuna storage URL: sqlite:///path.db, journal:path.log, "
            "postgresql://user@host/db or mysql://user@host/db"
        )

    @field_validator("objective")
    @classmethod
    def _check_objective(cls, value: str) -> str:
        if value not in OBJECTIVES:
            raise ValueError(f"must be a validation metric, one of {', '.join(OBJECTIVES)}")
        return value

    @model_validator(mode="after")
    def _check_space(self) -> SweepConfig:
        if self.n_trials is None and self.timeout_s is None:
            raise ValueError("sweep.n_trials: set n_trials or timeout_s, or the sweep never ends")
        space = parse_space(self.space)
        for key, spec in space.items():
            if isinstance(spec, Range) and self.sampler == "grid" and spec.step is None:
                raise ValueError(
                    f"sweep.space.{key}: the grid sampler needs a list or a range with step "
                    "(or use sampler random / tpe)"
                )
            section, leaf = key.split(".", 1)
            defaults = SECTIONS[section]().model_dump(mode="json")
            for value in _values_to_check(spec):
                try:
                    parse_section(section, {**defaults, leaf: value})
                except SparsetrainError as error:
                    raise ValueError(_value_error(key, value, str(error))) from None
        return self

    def search_space(self) -> dict[str, ParamSpec]:
        """The validated space as :class:`Choice` / :class:`Range` specs, by dotted key."""
        return parse_space(self.space)

    @property
    def direction(self) -> str:
        return direction(self.objective)


def _values_to_check(spec: ParamSpec) -> tuple[Any, ...]:
    return spec.values if isinstance(spec, Choice) else (spec.low, spec.high)


def _value_error(key: str, value: Any, detail: str) -> str:
    if detail.startswith(f"{key}: "):
        return f"sweep.space.{key}: {detail.removeprefix(f'{key}: ')}"
    return f"sweep.space.{key}: {value!r} is not valid: {detail}"


def parse_sweep_section(raw: dict[str, Any] | SweepConfig | None) -> SweepConfig:
    """Validate the ``sweep`` section on its own (keys, shapes, each value against its section),
    or raise a one-line SparsetrainError naming the key."""
    if isinstance(raw, SweepConfig):
        return raw
    if not isinstance(raw, dict):
        raise SparsetrainError(
            f"parameter 'sweep' must be a mapping (see conf/base/parameters_sweep.yml), got {raw!r}"
        )
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as error:
        raise SparsetrainError(_describe(error, "sweep", SweepConfig)) from None


def parse_sweep(params: dict[str, Any]) -> SweepConfig:
    """Validate ``params["sweep"]`` against the rest of the parameters, or raise a one-line
    SparsetrainError naming the key: every value of the space must make a valid configuration
    together with the other parameters, and the objective must fit the task."""
    cfg = parse_sweep_section(params.get("sweep"))
    check_sweep(cfg, parse_config(params))
    return cfg


def check_sweep(cfg: SweepConfig, base: SparsetrainConfig) -> None:
    """:func:`parse_sweep` on sections already parsed (the project hook holds them)."""
    flat = base.flat()
    for key, spec in cfg.search_space().items():
        for value in _values_to_check(spec):
            try:
                parse_config(unflatten({**flat, key: value}))
            except SparsetrainError as error:
                raise SparsetrainError(_value_error(key, value, str(error))) from None
    classification = base.data.task == "classification"
    task_objectives = CLASSIFICATION_OBJECTIVES if classification else REGRESSION_OBJECTIVES
    task_objectives += ("val_loss",)
    task_objectives += CV_CLASSIFICATION_OBJECTIVES if classification else CV_REGRESSION_OBJECTIVES
    if cfg.objective not in task_objectives:
        raise SparsetrainError(
            f"sweep.objective: '{cfg.objective}' is not a {base.data.task} metric; "
            f"use one of {', '.join(task_objectives)}"
        )
    if is_cv_objective(cfg.objective) and base.evaluation.cv_folds < 2:
        raise SparsetrainError(
            f"sweep.objective: '{cfg.objective}' scores each trial over evaluation.cv_folds folds, but "
            f"evaluation.cv_folds is {base.evaluation.cv_folds}; set evaluation.cv_folds=5 (at least 2)"
        )
    if base.data.val_size <= 0:
        raise SparsetrainError("data.val_size: a sweep scores trials on the validation split; set it > 0")
