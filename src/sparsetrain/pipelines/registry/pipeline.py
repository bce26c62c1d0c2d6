from kedro.pipeline import Pipeline, node

from .nodes import register_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                register_model,
                ["standardizer", "reducer", "network", "dataset", "run_report", "config:run"],
                "registered_model",
                name="register_model",
            ),
        ]
    )
