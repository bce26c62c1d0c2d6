from kedro.pipeline import Pipeline, node

from .nodes import register_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                register_model,
                ["standardizer", "reducer", "network", "dataset", "evaluation_metrics", "params:registry"],
                "registered_model",
                name="register_model",
            ),
        ]
    )
