"""Project pipelines, built on first use: `kedro run --pipelines x` imports only what x needs.

Which run alone: ``ingestion`` (it reads only the source); ``__default__`` (= ingestion +
compression + training + evaluation + registry) and ``sweep`` (= ingestion + compression + the
study). The stage pipelines compression, training, evaluation and registry take their inputs
in memory from the stages before them, so they run only inside those two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib import import_module

from kedro.pipeline import Pipeline

STAGES = ("ingestion", "compression", "training", "evaluation", "registry")
PIPELINES: dict[str, tuple[str, ...]] = {
    **{stage: (stage,) for stage in STAGES},
    "__default__": STAGES,
    "sweep": ("ingestion", "compression", "sweep"),
}


def _build(parts: tuple[str, ...]) -> Pipeline:
    return sum((import_module(f"sparsetrain.pipelines.{part}").create_pipeline() for part in parts), Pipeline([]))


class LazyPipelines(Mapping[str, Pipeline]):
    """A read-only mapping of pipeline name to Pipeline that imports a pipeline's modules (torch,
    matplotlib, optuna...) only when that pipeline is asked for."""

    def __init__(self, recipes: dict[str, tuple[str, ...]], build: Callable[[tuple[str, ...]], Pipeline] = _build):
        self._recipes, self._build, self._built = recipes, build, {}

    def __getitem__(self, name: str) -> Pipeline:
        if name not in self._built:
            self._built[name] = self._build(self._recipes[name])
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._recipes)

    def __len__(self) -> int:
        return len(self._recipes)


def register_pipelines() -> Mapping[str, Pipeline]:
    return LazyPipelines(PIPELINES)
