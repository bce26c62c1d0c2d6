"""``torchrun --nproc-per-node N [--nnodes M ...] -m sparsetrain.train [--params ...]``: one training
run on the ranks that torchrun starts, on one machine or several (README "Scale out").

Every rank prepares the data itself (same parameters, same seed: the same splits). Rank 0 runs
the whole ``kedro run`` (the MLflow run, evaluation, registration) and trains as rank 0 inside
it; the other ranks run the pipeline only up to its training node, without kedro-mlflow and
without pipeline hooks (they never open the MLflow store), and train as their ranks. On one
machine ``kedro run --params training.distributed.world_size=N`` is simpler: it spawns the ranks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sparsetrain.core.distributed import torchrun_shard
from sparsetrain.errors import SparsetrainError

TRAINING_NODE = "train_model"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="torchrun ... -m sparsetrain.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--params", default="", help="as for kedro run: key=value,key=value")
    parser.add_argument("--pipeline", default="__default__", help="a pipeline with the train_model node")
    parser.add_argument("--env", "-e", default=None, help="Kedro configuration environment")
    return parser.parse_args(argv)


def with_world_size(params: str, world_size: int) -> str:
    """The run's parameters record the world torchrun started (an explicit one is checked later)."""
    if "training.distributed.world_size" in params:
        return params
    item = f"training.distributed.world_size={world_size}"
    return f"{params},{item}" if params.strip() else item


def kedro_args(args: argparse.Namespace, params: str) -> list[str]:
    """The same run as ``kedro run`` options, for rank 0."""
    return ["--pipelines", args.pipeline, "--params", params, *(["--env", args.env] if args.env else [])]


def train_as_worker_rank(args: argparse.Namespace, params: str) -> None:
    """A rank other than 0: the pipeline up to its training node, no hooks, nothing logged."""
    from kedro.framework.project import pipelines, settings
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.runner import SequentialRunner

    from sparsetrain.cli import parse_params

    bootstrap_project(Path.cwd())
    # kedro-mlflow would open (and, on a fresh store, migrate) the MLflow store: rank 0's alone.
    # (Kedro matches the distribution's name as its metadata spells it: kedro_mlflow.)
    disabled = (*settings.DISABLE_HOOKS_FOR_PLUGINS, "kedro_mlflow", "kedro-mlflow")
    settings.set("DISABLE_HOOKS_FOR_PLUGINS", disabled)
    with KedroSession.create(env=args.env, runtime_params=parse_params(params)) as session:
        context = session.load_context()
        pipeline = pipelines[args.pipeline]
        if TRAINING_NODE not in {n.name for n in pipeline.nodes}:
            raise SparsetrainError(
                f"sparsetrain.train: pipeline '{args.pipeline}' has no {TRAINING_NODE} node; "
                "use __default__ (sweeps run their trials with kedro run)"
            )
        SequentialRunner().run(pipeline.to_nodes(TRAINING_NODE), context.catalog)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    shard = torchrun_shard()
    if shard is None:
        sys.exit(
            "sparsetrain.train: start it with `torchrun --nproc-per-node N -m sparsetrain.train ...` "
            "(N >= 2); on one machine `kedro run --params training.distributed.world_size=N` also works"
        )
    params = with_world_size(args.params, shard.world_size)
    if shard.is_main:
        from sparsetrain.__main__ import main as kedro_run

        kedro_run(kedro_args(args, params))
        return
    try:
        train_as_worker_rank(args, params)
    except SparsetrainError as error:
        sys.exit(f"rank {shard.rank}: {error}")


if __name__ == "__main__":
    main()
