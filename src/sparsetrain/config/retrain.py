"""The ``retrain`` section (conf/base/parameters_retrain.yml): champion / challenger promotion.

Read by ``kedro run --pipelines retrain`` and ``rollback``, and by the Airflow DAG (its
schedule). Checked at start-up like every section: an unknown key or a bad value is one line.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from sparsetrain.config.sections import SparsetrainConfig, _Section, parse_named_section
from sparsetrain.errors import SparsetrainError

# The metrics a retrain may judge by, and which way is better.
MAXIMIZED = {
    "classification": ("test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro"),
    "regression": ("test_r2",),
}
MINIMIZED = {"classification": (), "regression": ("test_rmse",)}

# Five cron fields (minute hour day month weekday) of digits, ranges, lists, steps, names, or a
# preset Airflow and cron both know.
_CRON_FIELD = r"[\w*/,\-?LW#]+"
_CRON = re.compile(rf"^\s*{_CRON_FIELD}(\s+{_CRON_FIELD}){{4}}\s*$")
_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight")


class RetrainConfig(_Section):
    params: Literal["champion", "configured"] = "champion"  # the challenger's recipe
    metric: str = "test_accuracy"  # regression: test_rmse (minimized) or test_r2
    min_delta: float = Field(0.0, ge=0.0)  # the improvement a challenger must show, in metric units
    max_density: float | None = Field(None, gt=0.0, le=1.0)  # a denser challenger is never promoted
    window: int | None = Field(None, ge=1)  # last N batches of the batch folder; None = all
    schedule: str = "0 3 * * *"  # the Airflow DAG's cron

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        if value in _PRESETS or _CRON.match(value):
            return value.strip()
        raise ValueError(
            "must be a five-field cron expression such as '0 3 * * *' (03:00 every day) or a preset "
            f"({', '.join(_PRESETS)})"
        )


def parse_retrain_section(raw: dict[str, Any] | RetrainConfig | None) -> RetrainConfig:
    return parse_named_section("retrain", RetrainConfig, raw)


def is_minimized(metric: str) -> bool:
    return any(metric in names for names in MINIMIZED.values())


def check_retrain(cfg: RetrainConfig, run: SparsetrainConfig) -> None:
    """The section against the run: a metric the task has (``test_rmse`` is not a classifier's),
    and a window only over batches. Raised at start-up of a retrain, before the lock or a run
    exists."""
    if cfg.window is not None and run.data.source != "batches":
        raise SparsetrainError(
            f"retrain.window counts batch files, but data.source is '{run.data.source}'; set "
            "data.source=batches (a folder of batch files) or retrain.window=null"
        )
    task = run.data.task
    valid = (*MAXIMIZED[task], *MINIMIZED[task])
    if cfg.metric not in valid:
        raise SparsetrainError(
            f"retrain.metric '{cfg.metric}' is not a metric of a {task} model (data.task); use one of "
            f"{', '.join(valid)}"
        )
