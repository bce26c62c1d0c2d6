"""The sections of the experiment pipelines: ``path`` (conf/base/parameters_path.yml, the
regularization path of a linear model) and ``study`` (conf/base/parameters_study.yml, the claims
C1..C8 tested over seeds). Checked at start-up like every section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from sparsetrain.config.sections import SparsetrainConfig, _Section, parse_named_section
from sparsetrain.errors import SparsetrainError


class PathConfig(_Section):
    n_strengths: int = Field(50, ge=2)  # log-spaced, from the smallest strength that zeroes every weight
    min_ratio: float = Field(1.0e-3, gt=0.0, lt=1.0)  # the path ends at min_ratio x that strength
    choose: Literal["min", "1se"] = "1se"  # best CV metric, or the sparsest within one standard error


class StudyConfig(_Section):
    preset: Literal["full", "quick"] = "full"  # quick: digits, 2 seeds, few epochs (tests)
    seeds: int = Field(5, ge=2)  # a paired test needs at least two
    datasets: tuple[Literal["digits", "fashion_mnist", "synthetic"], ...] = ("digits", "fashion_mnist")
    summarize_only: bool = False  # rebuild the report from the recorded runs, without training

    @field_validator("datasets", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not value:
            raise ValueError("name at least one dataset")
        return value


def parse_path_section(raw: dict[str, Any] | PathConfig | None) -> PathConfig:
    return parse_named_section("path", PathConfig, raw)


def parse_study_section(raw: dict[str, Any] | StudyConfig | None) -> StudyConfig:
    return parse_named_section("study", StudyConfig, raw)


def check_path(run: SparsetrainConfig) -> None:
    """One line naming the key when the run has no regularization path: a model that is not
    linear, pruning or greedy selection on top of the penalty (the model would no longer be the
    path's solution), or a penalty without a strength that zeroes every weight."""
    if run.model.kind != "linear":
        raise SparsetrainError(
            f"model.kind '{run.model.kind}': the path pipeline solves linear models exactly; "
            "set model.kind=linear"
        )
    if run.sparsity.pruning != "none":
        raise SparsetrainError(
            f"sparsity.pruning '{run.sparsity.pruning}': a path varies the penalty's strength only; "
            "set sparsity.pruning=none"
        )
    if run.sparsity.selection != "none":
        raise SparsetrainError(
            f"sparsity.selection '{run.sparsity.selection}' is greedy selection, not a penalty path; "
            "set sparsity.selection=none"
        )
    from sparsetrain.core.path import path_penalty  # torch: only when a path is asked for

    path_penalty(run.sparsity.penalty, run.sparsity.l1_ratio, run.sparsity.groups)
