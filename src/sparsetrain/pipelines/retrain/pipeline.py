from kedro.pipeline import Pipeline, node

from .nodes import (
    decide_promotion,
    load_current_data,
    register_challenger,
    resolve_challenger,
    score_champion,
)


def create_pipeline(**kwargs) -> Pipeline:
    """The retrain's own nodes; `pipeline_registry` puts the stage pipelines between them."""
    return Pipeline(
        [
            node(
                resolve_challenger,
                ["config:run", "config:retrain"],
                [
                    "challenger:run", "challenger:compression", "challenger:model", "challenger:sparsity",
                    "challenger:training", "champion_ref",
                ],
                name="resolve_challenger",
            ),
            node(
                load_current_data,
                ["config:data", "config:retrain", "raw_table", "raw_batches"],
                ["dataset", "data_window"],
                name="load_current_data",
            ),
            node(
                score_champion, ["champion_ref", "raw_splits", "dataset_info"], "champion_scores",
                name="score_champion",
            ),
            node(
                decide_promotion,
                [
                    "run_report", "champion_scores", "champion_ref", "data_window", "config:retrain",
                    "config:registry", "dataset_info",
                ],
                "retrain_decision",
                name="decide_promotion",
            ),
            node(
                register_challenger,
                [
                    "standardizer", "reducer", "network", "dataset", "run_report", "retrain_decision",
                    "challenger:run",
                ],
                "retrain_record",
                name="register_challenger",
            ),
        ]
    )
