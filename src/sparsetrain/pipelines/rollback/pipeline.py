from kedro.pipeline import Pipeline, node

from .nodes import roll_back


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([node(roll_back, "config:run", "rollback_record", name="roll_back")])
