from kedro.pipeline import Pipeline, node

from sparsetrain.pipelines.evaluation.nodes import evaluate_model, metrics_for_mlflow

from .nodes import (
    best_params,
    best_trial_metrics,
    pareto_set,
    plot_frontier,
    refit_best,
    register_best,
    run_sweep,
)


def create_pipeline(**kwargs) -> Pipeline:
    """The sweep's own nodes; `pipeline_registry` puts ingestion and compression in front."""
    return Pipeline(
        [
            node(
                run_sweep,
                [
                    "model_input",
                    "standardized_splits",
                    "dataset_info",
                    "params:sweep",
                    "params:data",
                    "params:compression",
                    "params:model",
                    "params:sparsity",
                    "params:training",
                ],
                # The catalog's files are the reports; later nodes take the in-memory copies, so
                # that workers sharing a project folder never read each other's half-written file.
                ["sweep_trials", "sweep_summary", "sweep_trials_frame", "sweep_result"],
                name="run_sweep",
            ),
            node(
                plot_frontier,
                ["sweep_trials_frame", "sweep_result"],
                "sweep_frontier",
                name="plot_sweep_frontier",
            ),
            node(best_params, "sweep_result", "sweep_best_params", name="sweep_best_params"),
            node(pareto_set, "sweep_result", "sweep_pareto_set", name="sweep_pareto_set"),
            node(best_trial_metrics, "sweep_result", "sweep_best_metrics", name="sweep_best_metrics"),
            node(
                refit_best,
                [
                    "sweep_result",
                    "standardized_splits",
                    "model_input",
                    "reducer",
                    "dataset_info",
                    "params:compression",
                ],
                ["sweep_network", "sweep_reducer", "sweep_refit_splits", "sweep_refit_history"],
                name="refit_sweep_best",
            ),
            node(
                evaluate_model,
                ["sweep_network", "sweep_refit_splits", "dataset_info", "sweep_refit_history"],
                "sweep_evaluation_metrics",
                name="evaluate_sweep_best",
            ),
            node(
                metrics_for_mlflow,
                ["sweep_evaluation_metrics", "sweep_refit_history"],
                "sweep_tracked_metrics",
                name="track_sweep_best_metrics",
            ),
            node(
                register_best,
                [
                    "standardizer",
                    "sweep_reducer",
                    "sweep_network",
                    "dataset",
                    "sweep_evaluation_metrics",
                    "params:registry",
                    "sweep_result",
                ],
                "sweep_registered_model",
                name="register_sweep_best",
            ),
        ]
    )
