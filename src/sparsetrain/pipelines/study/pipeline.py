from kedro.pipeline import Pipeline, node

from .nodes import report_study, run_study


def create_pipeline(**kwargs) -> Pipeline:
    """The study of the claims C1..C8: measure (or read back), then judge and report."""
    return Pipeline(
        [
            node(run_study, "config:study", "study_results", name="run_study"),
            node(report_study, ["study_results", "config:study"], "study_report", name="report_study"),
        ]
    )
