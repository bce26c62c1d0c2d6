from kedro.pipeline import Pipeline, node

from .nodes import register_sweep_best, report_sweep, run_sweep


def create_pipeline(**kwargs) -> Pipeline:
    """The sweep's own nodes; `pipeline_registry` puts ingestion and compression in front.
    Everything is handed over in memory; the reports go into the run's own folder."""
    return Pipeline(
        [
            node(
                run_sweep,
                ["model_input", "standardized_splits", "dataset_info", "config:run", "config:sweep"],
                ["sweep_trials", "sweep_summary"],
                name="run_sweep",
            ),
            node(report_sweep, ["sweep_trials", "sweep_summary"], "sweep_report", name="report_sweep"),
            # last: the refit, its test evaluation and its registration, after every other
            # metric and file of the run is logged (it takes sweep_report for that order)
            node(
                register_sweep_best,
                [
                    "sweep_summary",
                    "sweep_report",
                    "standardizer",
                    "dataset",
                    "dataset_info",
                    "standardized_splits",
                    "model_input",
                    "reducer",
                    "config:run",
                ],
                "sweep_registered_model",
                name="register_sweep_best",
            ),
        ]
    )
