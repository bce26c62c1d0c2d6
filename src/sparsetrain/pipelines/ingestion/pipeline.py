from kedro.pipeline import Pipeline, node

from .nodes import describe_dataset, fit_standardizer, load_source, split_data, standardize


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(load_source, ["config:data", "raw_table", "raw_batches"], "dataset", name="load_source"),
            node(describe_dataset, "dataset", "dataset_info", name="describe_dataset"),
            node(split_data, ["dataset", "config:data"], "raw_splits", name="split_data"),
            node(fit_standardizer, "raw_splits", "standardizer", name="fit_standardizer"),
            node(standardize, ["raw_splits", "standardizer"], "standardized_splits", name="standardize"),
        ]
    )
