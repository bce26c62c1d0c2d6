"""Project pipelines. Each is imported on its own, so `kedro run --pipelines x` loads only x."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from sparsetrain.pipelines import compression, evaluation, ingestion, registry, sweep, training


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {
        "ingestion": ingestion.create_pipeline(),
        "compression": compression.create_pipeline(),
        "training": training.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
        "registry": registry.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    # Not in __default__: an Optuna study over the training recipe (`kedro run --pipelines sweep`).
    pipelines["sweep"] = ingestion.create_pipeline() + compression.create_pipeline() + sweep.create_pipeline()
    return pipelines
