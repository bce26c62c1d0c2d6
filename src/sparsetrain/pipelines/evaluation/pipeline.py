from kedro.pipeline import Pipeline, node

from .nodes import (
    cross_validate_recipe,
    evaluate_model,
    list_selected_features,
    plot_evaluation,
    report_run,
    score_feature_selection,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                evaluate_model,
                ["network", "model_input", "dataset_info", "training_history", "config:export"],
                "evaluation_metrics",
                name="evaluate_model",
            ),
            node(
                plot_evaluation,
                ["network", "model_input", "dataset_info", "training_history"],
                "evaluation_plots",
                name="plot_evaluation",
            ),
            node(
                list_selected_features,
                ["network", "dataset_info", "compression_summary"],
                "selected_features",
                name="list_selected_features",
            ),
            node(
                score_feature_selection,
                ["selected_features", "dataset_info"],
                "feature_selection_metrics",
                name="score_feature_selection",
            ),
            # evaluation.cv_folds >= 2: k-fold CV of the whole recipe on the raw train + validation
            # rows, one nested run per fold; cv_folds 0 (the default): returns {} at once
            node(
                cross_validate_recipe,
                [
                    "raw_splits",
                    "dataset_info",
                    "config:data",
                    "config:compression",
                    "config:model",
                    "config:sparsity",
                    "config:training",
                    "config:evaluation",
                ],
                "cv_metrics",
                name="cross_validate_recipe",
            ),
            node(
                report_run,
                [
                    "evaluation_metrics",
                    "feature_selection_metrics",
                    "cv_metrics",
                    "training_history",
                    "evaluation_plots",
                    "selected_features",
                    "compression_summary",
                    "dataset_info",
                ],
                "run_report",
                name="report_run",
            ),
        ]
    )
