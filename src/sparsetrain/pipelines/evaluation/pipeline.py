from kedro.pipeline import Pipeline, node

from .nodes import evaluate_model, list_selected_features, metrics_for_mlflow, plot_evaluation, score_feature_selection


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                evaluate_model,
                ["network", "model_input", "dataset_info", "training_history"],
                "evaluation_metrics",
                name="evaluate_model",
            ),
            node(metrics_for_mlflow, ["evaluation_metrics", "training_history"], "tracked_metrics", name="track_metrics"),
            node(
                plot_evaluation,
                ["network", "model_input", "dataset_info", "training_history", "compression_summary"],
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
        ]
    )
