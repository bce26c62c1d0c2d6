"""Cross-validated sweep objectives (issue 12, part 1): `cv_val_*` are objectives, minimised or
maximised like their `val_*`, and need evaluation.cv_folds >= 2, checked before any trial."""

from __future__ import annotations

import pytest

from sparsetrain.config import parse_sweep
from sparsetrain.config.space import (
    CLASSIFICATION_OBJECTIVES,
    OBJECTIVES,
    REGRESSION_OBJECTIVES,
    direction,
    is_cv_objective,
)
from sparsetrain.errors import SparsetrainError

SPACE = {"sparsity.penalty": ["l1", "l0"]}


def params(objective, folds=5, **sections):
    return {"sweep": {"space": SPACE, "objective": objective}, "evaluation": {"cv_folds": folds}, **sections}


def test_every_validation_metric_has_a_cross_validated_objective():
    for name in CLASSIFICATION_OBJECTIVES + REGRESSION_OBJECTIVES:
        assert f"cv_{name}" in OBJECTIVES and is_cv_objective(f"cv_{name}")
        assert direction(f"cv_{name}") == direction(name)
    assert direction("cv_val_rmse") == "minimize" and direction("cv_val_accuracy") == "maximize"
    assert not is_cv_objective("val_accuracy")


def test_a_cv_objective_with_folds_validates():
    cfg = parse_sweep(params("cv_val_f1_macro"))
    assert cfg.objective == "cv_val_f1_macro" and cfg.direction == "maximize"
    regression = {"data": {"source": "synthetic", "task": "regression"}}
    assert parse_sweep(params("cv_val_rmse", **regression)).direction == "minimize"


@pytest.mark.parametrize(
    "raw, message",
    [
        (params("cv_val_accuracy", folds=0), r"^sweep\.objective: 'cv_val_accuracy' .*cv_folds is 0"),
        (params("cv_val_rmse"), r"^sweep\.objective: 'cv_val_rmse' is not a classification metric"),
        (params("cv_val_loss"), r"^sweep\.objective: .*must be a validation metric"),
        (
            {"sweep": {"space": {"evaluation.cv_folds": [2, 5]}, "objective": "cv_val_accuracy"},
             "evaluation": {"cv_folds": 5}},
            r"^sweep\.space\.evaluation\.cv_folds: evaluation\.\* cannot be swept",
        ),
    ],
)
def test_bad_cv_objectives_fail_with_one_line_naming_the_key(raw, message):
    with pytest.raises(SparsetrainError, match=message) as error:
        parse_sweep(raw)
    assert "\n" not in str(error.value)
