"""Registry: the last node of a run. Logs the raw-rows model and registers it as a new version,
only after everything else of the run is logged (see :func:`sparsetrain.tracking.register`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from sparsetrain import tracking
from sparsetrain.config import SparsetrainConfig
from sparsetrain.core.data import Dataset, Standardizer
from sparsetrain.serving import build_predictor, input_example


def register_model(
    standardizer: Standardizer,
    reducer: Any,
    network: nn.Module,
    dataset: Dataset,
    run_report: dict[str, Any],
    run: SparsetrainConfig,
) -> dict[str, Any]:
    """Register the run's model; its configuration goes with it (``run_config.json``), so that
    a retrain can train a challenger with this model's own recipe."""
    predictor = build_predictor(standardizer, reducer, network, dataset)
    return tracking.publish_model(
        run_report, predictor, input_example(dataset), dataset.task, run.registry, config=run
    )
