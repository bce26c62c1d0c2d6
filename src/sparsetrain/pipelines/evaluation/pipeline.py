from kedro.pipeline import Pipeline, node

from .nodes import (
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
                ["network", "model_input", "dataset_info", "training_history"],
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
            node(
                report_run,
                [
                    "evaluation_metrics",
                    "feature_selection_metrics",
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
