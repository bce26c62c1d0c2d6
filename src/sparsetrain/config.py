"""Typed, validated parameters: the config contract of ``conf/base/parameters_*.yml``.

Each section is a frozen pydantic model that forbids unknown keys, so that a typo or a bad value
fails at the start of a run with a message naming the dotted key (``sparsity.strength``) and the
fix. Nodes receive these objects, never raw dicts.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparsetrain.core.search_space import (
    CLASSIFICATION_OBJECTIVES,
    OBJECTIVES,
    REGRESSION_OBJECTIVES,
    Choice,
    ParamSpec,
    Range,
    direction,
)
from sparsetrain.errors import SparsetrainError

Task = Literal["classification", "regression"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    source: Literal["digits", "fashion_mnist", "synthetic", "table"] = "digits"
    path: str | None = None
    target: str | None = None
    task: Task = "classification"
    val_size: float = Field(0.1, ge=0.0, lt=1.0)
    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 42
    # synthetic source: shape and the number of informative features
    n_samples: int = Field(2000, ge=10)
    n_features: int = Field(50, ge=1)
    n_informative: int = Field(10, ge=1)
    n_classes: int = Field(3, ge=2)
    # fashion_mnist: cap the training images used (None = all 60000)
    max_train_samples: int | None = Field(None, ge=10)

    @model_validator(mode="after")
    def _check_splits(self) -> DataConfig:
        if self.test_size + self.val_size >= 1.0:
            raise ValueError(
                f"data.test_size + data.val_size = {self.test_size + self.val_size:g} leaves no "
                "training data; make their sum < 1"
            )
        if self.source == "table" and not self.target:
            raise ValueError("data.target must name the label column when data.source is 'table'")
        if self.source == "synthetic" and self.n_informative > self.n_features:
            raise ValueError("data.n_informative must be <= data.n_features")
        return self


class CompressionConfig(_Section):
    method: Literal["none", "pca", "svd", "random_projection", "sparse_random_projection"] = "none"
    n_components: int | float | None = None

    @field_validator("n_components")
    @classmethod
    def _check_components(cls, value: int | float | None) -> int | float | None:
        if value is None:
            return value
        if isinstance(value, float) and not value.is_integer():
            if not 0.0 < value < 1.0:
                raise ValueError("a float n_components is a fraction of variance in (0, 1)")
            return value
        value = int(value)
        if value < 1:
            raise ValueError("n_components must be a positive integer or a fraction in (0, 1)")
        return value

    @model_validator(mode="after")
    def _check_method(self) -> CompressionConfig:
        if self.method != "none" and self.n_components is None:
            raise ValueError(f"compression.n_components is required for method '{self.method}'")
        if isinstance(self.n_components, float) and self.method != "pca":
            raise ValueError("a fractional compression.n_components (variance kept) needs method 'pca'")
        return self


class ModelConfig(_Section):
    kind: Literal["linear", "mlp", "cnn"] = "linear"
    hidden: tuple[int, ...] = (300, 100)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    init: Literal["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"] = (
        "kaiming_uniform"
    )

    @field_validator("hidden", mode="before")
    @classmethod
    def _parse_hidden(cls, value: Any) -> Any:
        # `kedro run --params model.hidden=[64]` may arrive as the string "[64]"
        if isinstance(value, str):
            import yaml

            value = yaml.safe_load(value)
        return [value] if isinstance(value, int) else value

    @field_validator("hidden")
    @classmethod
    def _check_hidden(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 1 for h in value):
            raise ValueError("every hidden layer size must be >= 1")
        return value


class SparsityConfig(_Section):
    penalty: Literal["none", "l1", "l2", "elasticnet", "group_lasso", "l0"] = "l1"
    strength: float = Field(1.0e-3, ge=0.0)
    l1_ratio: float = Field(0.5, ge=0.0, le=1.0)
    groups: Literal["input", "neuron"] = "input"
    pruning: Literal["none", "threshold", "gmp", "structured"] = "none"
    threshold: float = Field(1.0e-3, ge=0.0)
    target_density: float = Field(0.1, gt=0.0, le=1.0)
    scope: Literal["layer", "global"] = "global"
    # gmp: prune from this fraction of the epochs to that one, then fine-tune with masks fixed
    prune_start: float = Field(0.0, ge=0.0, lt=1.0)
    prune_end: float = Field(0.75, gt=0.0, le=1.0)
    # threshold / structured: epochs of fine-tuning with the mask fixed after pruning
    finetune_epochs: int = Field(5, ge=0)

    @field_validator("strength", "threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _check_window(self) -> SparsityConfig:
        if self.prune_start >= self.prune_end:
            raise ValueError("sparsity.prune_start must be < sparsity.prune_end")
        return self


class TrainingConfig(_Section):
    optimizer: Literal["sgd", "momentum", "nesterov", "adam", "adamw"] = "adam"
    lr: float = Field(1.0e-2, gt=0.0)
    # "auto": 256, made smaller on small data so that an epoch has at least 20 steps
    batch_size: int | Literal["auto"] | None = "auto"
    epochs: int = Field(30, ge=1)
    lr_schedule: Literal["constant", "step", "cosine"] = "cosine"
    early_stopping: int | None = Field(5, ge=1)
    device: str = "auto"
    seed: int = 42
    amp: bool = False
    verbose: bool = True

    @field_validator("batch_size")
    @classmethod
    def _check_batch_size(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer, 'auto', or null for full batch")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("must be auto, cpu, cuda or cuda:N")


class RegistryConfig(_Section):
    # The MLflow experiment is set in conf/base/mlflow.yml (kedro-mlflow owns it).
    model_name: str = Field("sparsetrain-classifier", min_length=1)


class SparsetrainConfig(_Section):
    """All sections of one training run."""

    data: DataConfig = DataConfig()
    compression: CompressionConfig = CompressionConfig()
    model: ModelConfig = ModelConfig()
    sparsity: SparsityConfig = SparsityConfig()
    training: TrainingConfig = TrainingConfig()
    registry: RegistryConfig = RegistryConfig()

    @model_validator(mode="after")
    def _check_combination(self) -> SparsetrainConfig:
        if self.model.kind == "cnn":
            if self.data.source not in ("digits", "fashion_mnist"):
                raise ValueError(
                    f"model.kind 'cnn' needs image data (digits or fashion_mnist), not data.source "
                    f"'{self.data.source}'; use model.kind mlp or linear"
                )
            if self.compression.method != "none":
                raise ValueError(
                    "model.kind 'cnn' needs the image shape, which compression.method "
                    f"'{self.compression.method}' destroys; set compression.method=none or use mlp"
                )
        if self.data.task == "regression" and self.data.source in ("digits", "fashion_mnist"):
            raise ValueError(f"data.source '{self.data.source}' is a classification set; set data.task=classification")
        return self

    def flat(self) -> dict[str, Any]:
        """Dotted-key view (``sparsity.penalty``), the form MLflow params and sweeps use."""
        return flatten(self.model_dump(mode="json"))


SECTIONS: dict[str, type[_Section]] = {
    name: field.annotation for name, field in SparsetrainConfig.model_fields.items()  # type: ignore[misc]
}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _describe(error: ValidationError, section: str | None) -> str:
    first = error.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not isinstance(p, int) or first["type"] != "literal_error")
    key = ".".join(p for p in (section, loc) if p)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown parameter '{key}': remove it or check its spelling against conf/base/parameters*.yml"
    if first["type"] == "literal_error":
        return f"{key}: {message} (got {first['input']!r})"
    if not key or message.startswith(key.split(".")[0] + "."):
        return message
    return f"{key}: {message} (got {first.get('input')!r})"


def parse_section(section: str, raw: dict[str, Any] | BaseModel | None) -> Any:
    """Validate one section (``data``, ``model``, ...) or raise a one-line SparsetrainError."""
    model = SECTIONS[section]
    if isinstance(raw, model):
        return raw
    if raw is not None and not isinstance(raw, dict):
        raise SparsetrainError(f"parameter '{section}' must be a mapping of keys, got {raw!r}")
    try:
        return model.model_validate(raw or {})
    except ValidationError as error:
        raise SparsetrainError(_describe(error, section)) from None


def parse_config(params: dict[str, Any]) -> SparsetrainConfig:
    """Validate the training sections of a parameters dict; other top-level keys are ignored."""
    sections = {name: parse_section(name, params.get(name)) for name in SECTIONS}
    try:
        return SparsetrainConfig(**sections)
    except ValidationError as error:
        raise SparsetrainError(_describe(error, None)) from None


# --------------------------------------------------------------------------------------------
# Sweeps (conf/base/parameters_sweep.yml): an Optuna study over dotted parameter paths.

_RANGE_KEYS = {"low", "high", "log", "step"}
# Parameters a sweep may not vary: every trial is scored on the same validation split and
# registered under the same name.
_FIXED_SECTIONS = {
    "data": "every trial must be scored on the same validation split",
    "registry": "the best trial is registered under one model name",
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
        raise SparsetrainError(_describe(error, "sweep")) from None


def parse_sweep(params: dict[str, Any]) -> SweepConfig:
    """Validate ``params["sweep"]`` against the rest of the parameters, or raise a one-line
    SparsetrainError naming the key: every value of the space must make a valid configuration
    together with the other parameters, and the objective must fit the task."""
    cfg = parse_sweep_section(params.get("sweep"))
    base = parse_config(params)
    flat = base.flat()
    for key, spec in cfg.search_space().items():
        for value in _values_to_check(spec):
            try:
                parse_config(unflatten({**flat, key: value}))
            except SparsetrainError as error:
                raise SparsetrainError(_value_error(key, value, str(error))) from None
    classification = base.data.task == "classification"
    task_objectives = CLASSIFICATION_OBJECTIVES if classification else REGRESSION_OBJECTIVES
    if cfg.objective not in task_objectives + ("val_loss",):
        raise SparsetrainError(
            f"sweep.objective: '{cfg.objective}' is not a {base.data.task} metric; "
            f"use one of {', '.join(task_objectives + ('val_loss',))}"
        )
    if base.data.val_size <= 0:
        raise SparsetrainError("data.val_size: a sweep scores trials on the validation split; set it > 0")
    return cfg
