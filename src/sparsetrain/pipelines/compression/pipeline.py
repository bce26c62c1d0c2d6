from kedro.pipeline import Pipeline, node

from .nodes import compress


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                compress,
                ["standardized_splits", "config:compression", "config:data"],
                ["reducer", "compression_summary", "model_input"],
                name="compress",
            ),
        ]
    )
