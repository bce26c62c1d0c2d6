from kedro.pipeline import Pipeline, node

from .nodes import train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_model,
                ["model_input", "dataset_info", "config:model", "config:sparsity", "config:training"],
                ["network", "training_history"],
                name="train_model",
            ),
        ]
    )
