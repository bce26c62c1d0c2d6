"""The run sections of ``conf/base/parameters_*.yml`` as frozen pydantic models.

Each section forbids unknown keys, so that a typo or a bad value fails at the start of a run with
one line naming the dotted key (``sparsity.strength``), the nearest valid key and the fix. The
project hook parses them once (:func:`parse_config`) and hands the typed sections to the nodes.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparsetrain.errors import SparsetrainError

Task = Literal["classification", "regression"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    source: Literal["digits", "fashion_mnist", "synthetic", "table", "batches"] = "digits"
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
    # table: the CSV field separator (None = ','); Parquet ignores it
    separator: str | None = Field(None, min_length=1, max_length=1)

    @model_validator(mode="after")
    def _check_splits(self) -> DataConfig:
        if self.test_size + self.val_size >= 1.0:
            raise ValueError(
                f"data.test_size + data.val_size = {self.test_size + self.val_size:g} leaves no "
                "training data; make their sum < 1"
            )
        if self.source in ("table", "batches") and not self.target:
            raise ValueError(f"data.target must name the label column when data.source is '{self.source}'")
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
    init: Literal[
        "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal", "normal"
    ] = "kaiming_uniform"

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
    pruning: Literal["none", "threshold", "gmp", "structured", "set", "rigl", "nm"] = "none"
    threshold: float = Field(1.0e-3, ge=0.0)
    target_density: float = Field(0.1, gt=0.0, le=1.0)
    scope: Literal["layer", "global"] = "global"
    # gmp: prune from this fraction of the epochs to that one, then fine-tune with masks fixed
    prune_start: float = Field(0.0, ge=0.0, lt=1.0)
    prune_end: float = Field(0.75, gt=0.0, le=1.0)
    # threshold / structured: epochs of fine-tuning with the mask fixed after pruning
    finetune_epochs: int = Field(5, ge=0)
    # set / rigl: optimizer steps between mask updates and per-layer densities; the floor also gmp / threshold
    update_every: int = Field(100, ge=1)
    layer_density: Literal["uniform", "erk"] = "uniform"
    min_layer_density: float = Field(0.0, ge=0.0, le=1.0)
    # nm: keep n of every m consecutive input weights (2:4)
    n: int = Field(2, ge=1)
    m: int = Field(4, ge=2)
    # greedy feature selection (linear models): forward stepwise up to max_features
    selection: Literal["none", "forward"] = "none"
    max_features: int | None = Field(None, ge=1)

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
        if self.n >= self.m:
            raise ValueError("sparsity.n must be < sparsity.m")
        if self.pruning in ("gmp", "set", "rigl") and self.min_layer_density > self.target_density:
            raise ValueError("sparsity.min_layer_density must be <= sparsity.target_density")
        return self


class ExportConfig(_Section):
    # the sparse file registered and served: fp16 / int8 nonzero values (core/export.py)
    quantize: Literal["none", "fp16", "int8"] = "none"


class EvaluationConfig(_Section):
    # k-fold cross-validation of the whole recipe (standardizer, reducer, training refit per fold)
    cv_folds: int = Field(0, ge=0)  # 0 = off
    cv_repeats: int = Field(1, ge=1)

    @field_validator("cv_folds")
    @classmethod
    def _check_folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("must be 0 (off) or at least 2 folds")
        return value


class DistributedConfig(_Section):
    """Data-parallel training (``sparsetrain.core.distributed``): ``world_size`` ranks on this
    machine, each on a shard of every global batch; under ``torchrun`` the launcher's world wins."""

    world_size: int = Field(1, ge=1, le=1024)
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on CUDA, gloo on CPU


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
    distributed: DistributedConfig = DistributedConfig()

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


# What MLflow's registry refuses in a model name (mlflow.utils.validation._validate_model_name),
# checked here so that a bad name fails before training, not after it.
_BAD_MODEL_NAME = re.compile(r"[/:]|^\s*$|(^|/)\.\.?(/|$)")


class RegistryConfig(_Section):
    # The MLflow experiment is set in conf/base/mlflow.yml (kedro-mlflow owns it).
    model_name: str | None = None  # None = by task: sparsetrain-classifier | sparsetrain-regressor
    allow_degenerate: bool = False  # register a model with density 0 or chance-level accuracy

    @field_validator("model_name")
    @classmethod
    def _check_model_name(cls, value: str | None) -> str | None:
        if value is not None and (_BAD_MODEL_NAME.search(value) or value in (".", "..")):
            raise ValueError(
                "MLflow model names may not be empty or contain '/' or ':'; use e.g. 'my-model'"
            )
        return value

    def name_for(self, task: str) -> str:
        """The registered model name: the configured one, or one per task so that a regressor
        never lands under the classifier's name."""
        by_task = "sparsetrain-regressor" if task == "regression" else "sparsetrain-classifier"
        return self.model_name or by_task


class SparsetrainConfig(_Section):
    """All sections of one training run."""

    data: DataConfig = DataConfig()
    compression: CompressionConfig = CompressionConfig()
    model: ModelConfig = ModelConfig()
    sparsity: SparsityConfig = SparsityConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    export: ExportConfig = ExportConfig()
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
        if self.sparsity.selection != "none" and self.model.kind != "linear":
            raise ValueError(
                f"sparsity.selection '{self.sparsity.selection}' selects input features of a linear model; "
                f"set model.kind=linear or sparsity.selection=none"
            )
        if self.data.task == "regression" and self.data.source in ("digits", "fashion_mnist"):
            raise ValueError(
                f"data.source '{self.data.source}' is a classification set; set data.task=classification"
            )
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


def nearest(key: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid spelling, or nothing."""
    match = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _describe(error: ValidationError, section: str | None, model: type[BaseModel] | None = None) -> str:
    """One line for the first error; ``model`` is the section's class when it is not a run section."""
    first = error.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not isinstance(p, int) or first["type"] != "literal_error")
    key = ".".join(p for p in (section, loc) if p)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        owner = model or (SECTIONS.get(key.split(".")[0]) if section is None else SECTIONS.get(section))
        valid = list(owner.model_fields) if owner is not None else []
        return (
            f"unknown parameter '{key}'{nearest(key.rsplit('.', 1)[-1], valid)}: remove it or check its "
            "spelling against conf/base/parameters*.yml"
        )
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


def parse_named_section(name: str, model: type[BaseModel], raw: Any) -> Any:
    """Validate a top-level section that is not a run section (``retrain``, ``path``, ``study``)
    on its own, or raise a one-line SparsetrainError naming the key."""
    if isinstance(raw, model):
        return raw
    if raw is not None and not isinstance(raw, dict):
        raise SparsetrainError(
            f"parameter '{name}' must be a mapping (see conf/base/parameters_{name}.yml), got {raw!r}"
        )
    try:
        return model.model_validate(raw or {})
    except ValidationError as error:
        raise SparsetrainError(_describe(error, name, model)) from None


# Top-level parameter keys that are not run sections; each has its own parser.
OTHER_SECTIONS = ("sweep", "retrain", "path", "study")


def check_sections(params: dict[str, Any]) -> None:
    """An unknown top-level key (``evaluaton.cv_folds=3``) is an error,
    never silently ignored."""
    known = [*SECTIONS, *OTHER_SECTIONS]
    for name in params:
        if name not in known:
            raise SparsetrainError(
                f"unknown parameter section '{name}'{nearest(str(name), known)}: the sections are "
                f"{', '.join(known)}; remove it or check its spelling"
            )


def parse_config(params: dict[str, Any]) -> SparsetrainConfig:
    """Validate every top-level key and the run sections of a parameters dict."""
    check_sections(params)
    sections = {name: parse_section(name, params.get(name)) for name in SECTIONS}
    try:
        return SparsetrainConfig(**sections)
    except ValidationError as error:
        raise SparsetrainError(_describe(error, None)) from None
