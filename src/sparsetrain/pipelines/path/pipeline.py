from kedro.pipeline import Pipeline, node

from .nodes import (
    choose_strength,
    chosen_model,
    cross_validate,
    fit_full_path,
    plan_path,
    register_path_model,
    report_path,
)


def create_pipeline(**kwargs) -> Pipeline:
    """After ingestion's split: the plan (it checks the run first: its name sorts before
    ingestion's first node), the full-data path, the CV, the choice, the chosen model, the report
    and, last, the registration."""
    return Pipeline(
        [
            node(plan_path, ["config:run", "config:path"], "path_plan", name="check_path_plan"),
            node(
                fit_full_path, ["raw_splits", "dataset_info", "path_plan"], "path_fit", name="fit_full_path"
            ),
            node(
                cross_validate, ["raw_splits", "dataset_info", "path_plan", "path_fit"], "path_cv",
                name="cross_validate_path",
            ),
            node(
                choose_strength, ["path_cv", "path_plan", "dataset_info"], "path_choice",
                name="choose_strength",
            ),
            node(
                chosen_model, ["dataset_info", "path_fit", "path_choice"], "path_model", name="chosen_model"
            ),
            node(
                report_path,
                ["path_model", "path_fit", "path_cv", "path_choice", "path_plan", "raw_splits",
                 "dataset_info"],
                "path_run_report",
                name="report_path",
            ),
            node(
                register_path_model,
                ["path_model", "dataset", "path_run_report", "path_plan", "config:run"],
                "path_registered_model",
                name="register_path_model",
            ),
        ]
    )
