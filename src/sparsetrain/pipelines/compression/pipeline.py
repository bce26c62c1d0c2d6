from kedro.pipeline import Pipeline, node

from .nodes import compress, compression_metrics, fit_compression


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                fit_compression,
                ["standardized_splits", "params:compression", "params:data"],
                ["reducer", "compression_summary"],
                name="fit_compression",
            ),
            node(compress, ["standardized_splits", "reducer"], "model_input", name="compress"),
            node(compression_metrics, "compression_summary", "compression_metrics", name="compression_metrics"),
        ]
    )
