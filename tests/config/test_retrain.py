"""The retrain section: every key checked, the metric against the task, the schedule a cron."""

from __future__ import annotations

import pytest

from sparsetrain.config import (
    RetrainConfig,
    check_retrain,
    is_minimized,
    parse_config,
    parse_retrain_section,
)
from sparsetrain.config.sections import check_sections
from sparsetrain.errors import SparsetrainError


def error_of(raw) -> str:
    with pytest.raises(SparsetrainError) as error:
        parse_retrain_section(raw)
    return str(error.value)


def test_defaults_match_the_design():
    cfg = parse_retrain_section(None)
    assert cfg == RetrainConfig(params="champion", metric="test_accuracy", min_delta=0.0, max_density=None,
                                window=None, schedule="0 3 * * *")


@pytest.mark.parametrize(
    "raw, named",
    [
        ({"metrc": "test_accuracy"}, "retrain.metrc' (did you mean 'metric'?)"),
        ({"params": "best"}, "retrain.params"),
        ({"min_delta": -0.1}, "retrain.min_delta"),
        ({"max_density": 0}, "retrain.max_density"),
        ({"max_density": 1.5}, "retrain.max_density"),
        ({"window": 0}, "retrain.window"),
        ({"schedule": "every day"}, "retrain.schedule: must be a five-field cron"),
        ({"schedule": "0 3 * *"}, "retrain.schedule"),
        ("daily", "parameter 'retrain' must be a mapping"),
    ],
)
def test_a_bad_key_or_value_is_one_line_naming_it(raw, named):
    message = error_of(raw)
    assert named in message and "\n" not in message


@pytest.mark.parametrize("schedule", ["0 3 * * *", "*/15 * * * 1-5", "@daily", "0 0 1 jan,jul *"])
def test_cron_expressions_and_presets_are_schedules(schedule):
    assert parse_retrain_section({"schedule": schedule}).schedule == schedule


def test_the_metric_must_be_one_of_the_task():
    regression = parse_config({"data": {"source": "synthetic", "task": "regression"}})
    with pytest.raises(SparsetrainError, match="retrain.metric 'test_accuracy' is not a metric of a regression"):
        check_retrain(RetrainConfig(), regression)
    check_retrain(RetrainConfig(metric="test_rmse"), regression)
    with pytest.raises(SparsetrainError, match="test_rmse"):
        check_retrain(RetrainConfig(metric="test_rmse"), parse_config({}))
    assert is_minimized("test_rmse") and not is_minimized("test_accuracy") and not is_minimized("test_r2")


def test_retrain_is_a_known_top_level_section():
    check_sections({"retrain": {}, "data": {}})


def test_a_window_needs_batches():
    with pytest.raises(SparsetrainError, match="retrain.window counts batch files, but data.source is 'digits'"):
        check_retrain(RetrainConfig(window=2), parse_config({}))
    check_retrain(RetrainConfig(window=2), parse_config({"data": {"source": "batches", "target": "y"}}))
