"""Project pipelines, built on first use: `kedro run --pipelines x` imports only what x needs.

Which run alone: ``ingestion`` (it reads only the source); ``__default__`` (= ingestion +
compression + training + evaluation + registry), ``sweep`` (= ingestion + compression + the
study), ``retrain`` (the retrain's own nodes around ingestion's split, compression, training and
evaluation, fed the challenger's sections) and ``rollback``. The stage pipelines compression,
training, evaluation and registry take their inputs in memory from the stages before them, so
they run only inside those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib import import_module

from kedro.pipeline import Pipeline, pipeline

STAGES = ("ingestion", "compression", "training", "evaluation", "registry")
# The sections a retrain's challenger brings (the champion's recipe, or the configured one).
CHALLENGER_INPUTS = {
    f"config:{name}": f"challenger:{name}" for name in ("compression", "model", "sparsity", "training")
}


def stage(name: str) -> Pipeline:
    return import_module(f"sparsetrain.pipelines.{name}").create_pipeline()


def stages(*names: str) -> Pipeline:
    return sum((stage(name) for name in names), Pipeline([]))


def retrain() -> Pipeline:
    """The retrain's nodes (it loads the data window itself), ingestion from the loaded dataset
    on, then compression, training and evaluation with the challenger's sections."""
    fit = pipeline(stages("compression", "training", "evaluation"), inputs=CHALLENGER_INPUTS)
    return stage("retrain") + stage("ingestion").from_inputs("dataset") + fit


PIPELINES: dict[str, Callable[[], Pipeline]] = {
    **{name: (lambda name=name: stage(name)) for name in STAGES},
    "__default__": lambda: stages(*STAGES),
    "sweep": lambda: stages("ingestion", "compression", "sweep"),
    "retrain": retrain,
    "rollback": lambda: stage("rollback"),
    # ingestion's split (the path fits its own standardizer on train + validation, and per fold)
    "path": lambda: stage("ingestion").to_outputs("raw_splits", "dataset_info") + stage("path"),
    "study": lambda: stage("study"),
}


class LazyPipelines(Mapping[str, Pipeline]):
    """A read-only mapping of pipeline name to Pipeline that imports a pipeline's modules (torch,
    matplotlib, optuna...) only when that pipeline is asked for."""

    def __init__(self, builders: Mapping[str, Callable[[], Pipeline]]):
        self._builders, self._built = builders, {}

    def __getitem__(self, name: str) -> Pipeline:
        if name not in self._built:
            self._built[name] = self._builders[name]()
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


def register_pipelines() -> Mapping[str, Pipeline]:
    return LazyPipelines(PIPELINES)
