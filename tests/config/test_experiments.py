"""The evaluation, path and study sections: defaults of the design, every key checked."""

from __future__ import annotations

import pytest

from sparsetrain.config import PathConfig, StudyConfig, parse_config, parse_path_section, parse_study_section
from sparsetrain.errors import SparsetrainError


def error_of(call, raw) -> str:
    with pytest.raises(SparsetrainError) as error:
        call(raw)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_defaults_match_the_design():
    assert parse_path_section(None) == PathConfig(n_strengths=50, min_ratio=1e-3, choose="1se")
    assert parse_study_section(None) == StudyConfig(
        preset="full", seeds=5, datasets=("digits", "fashion_mnist"), summarize_only=False
    )
    cfg = parse_config({})
    assert (cfg.evaluation.cv_folds, cfg.evaluation.cv_repeats) == (0, 1)
    assert (cfg.sparsity.selection, cfg.sparsity.max_features) == ("none", None)


@pytest.mark.parametrize(
    "call, raw, named",
    [
        (parse_path_section, {"choose": "2se"}, "path.choose"),
        (parse_path_section, {"min_ratio": 1.5}, "path.min_ratio"),
        (parse_path_section, {"n_strenghts": 10}, "did you mean 'n_strengths'"),
        (parse_study_section, {"preset": "tiny"}, "study.preset"),
        (parse_study_section, {"datasets": ["mnist"]}, "study.datasets"),
        (parse_study_section, {"datasets": []}, "study.datasets"),
        (parse_study_section, {"seeds": 1}, "study.seeds"),
    ],
)
def test_a_bad_key_or_value_is_one_line_naming_it(call, raw, named):
    assert named in error_of(call, raw)


@pytest.mark.parametrize(
    "params, named",
    [
        ({"evaluation": {"cv_folds": 1}}, "evaluation.cv_folds: must be 0 (off) or at least 2 folds"),
        ({"evaluation": {"cv_repeats": 0}}, "evaluation.cv_repeats"),
        ({"sparsity": {"selection": "backward"}}, "sparsity.selection"),
        ({"sparsity": {"selection": "forward"}, "model": {"kind": "mlp"}}, "set model.kind=linear"),
        ({"sparsity": {"max_features": 0}}, "sparsity.max_features"),
        ({"model": {"init": "zeros"}}, "model.init"),
    ],
)
def test_run_section_keys_of_the_evaluation_issue(params, named):
    assert named in error_of(parse_config, params)


def test_the_naive_init_and_a_single_dataset_parse():
    assert parse_config({"model": {"init": "normal"}}).model.init == "normal"
    assert parse_study_section({"datasets": "digits"}).datasets == ("digits",)
