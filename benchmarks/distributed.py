"""Data-parallel training (``training.distributed.world_size``) against one process, on Fashion-MNIST.

    python -m benchmarks.distributed                       # 1 and 2 CPU ranks, 5 epochs
    python -m benchmarks.distributed --quick               # 12000 rows, 2 epochs
    python -m benchmarks.distributed --world-sizes 1,2,4 --device cpu,cuda

The MLP 784-300-100-10 with the L1 prox step (the default recipe, ``sparsetrain.recipe.train_network``)
trained with the same global batch and seed on 1 process and on N ranks (gloo on the CPU; on CUDA
one GPU per rank, so a one-GPU machine measures only world size 1 there). Each rank takes
``cores / N`` torch threads. Reported: wall seconds of ``train_network`` (rank start-up included),
seconds per epoch inside ``fit``, the speed-up and the scaling efficiency (speed-up / N), and the
test accuracy, which must agree across world sizes (the same averaged gradient). Results:
``benchmarks/results/distributed.json`` (``distributed_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import sys
import time

from ._common import RESULTS, accuracy, load_splits, machine, write_json


def train_once(splits, info, world_size: int, device: str, epochs: int) -> dict:
    from sparsetrain.config import ModelConfig, SparsityConfig, TrainingConfig
    from sparsetrain.core.metrics import sparsity_metrics
    from sparsetrain.recipe import train_network

    training = TrainingConfig(
        epochs=epochs, lr=1e-2, batch_size=256, lr_schedule="cosine", early_stopping=None,
        device=device, seed=0, verbose=False, distributed={"world_size": world_size},
    )
    sparsity = SparsityConfig(penalty="l1", strength=1e-4, pruning="none")
    started = time.perf_counter()
    net, history = train_network(splits, info, ModelConfig(kind="mlp", hidden=(300, 100)), sparsity, training)
    wall = time.perf_counter() - started
    return {
        "device": device, "world_size": world_size, "epochs": history.epochs_run,
        "wall_seconds": wall, "fit_seconds": history.seconds,
        "seconds_per_epoch": history.seconds / max(history.epochs_run, 1),
        "test_accuracy": accuracy(net, splits.X_test, splits.y_test),
        "density": sparsity_metrics(net)["density"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--world-sizes", default="1,2")
    parser.add_argument("--device", default="cpu", help="comma-separated: cpu, cuda")
    args = parser.parse_args(argv)
    import torch

    world_sizes = [int(n) for n in args.world_sizes.split(",")]
    devices = [d for d in args.device.split(",") if d != "cuda" or torch.cuda.is_available()]
    epochs, rows = (2, 12000) if args.quick else (5, None)
    splits, info = load_splits(rows)
    runs = []
    for device in devices:
        sizes = [n for n in world_sizes if device == "cpu" or n <= torch.cuda.device_count()]
        base = None
        for n in sizes:
            run = train_once(splits, info, n, device, epochs)
            base = base or run
            run["speedup"] = base["wall_seconds"] / run["wall_seconds"]
            run["efficiency"] = run["speedup"] / (n / base["world_size"])
            run["speedup_per_epoch"] = base["seconds_per_epoch"] / run["seconds_per_epoch"]
            runs.append(run)
            print(f"{device:4s} world size {n}: {run['wall_seconds']:6.1f} s wall, {run['seconds_per_epoch']:.2f} s/epoch, "
                  f"speed-up {run['speedup']:.2f}x (efficiency {run['efficiency']:.2f}), "
                  f"test accuracy {run['test_accuracy']:.4f}, density {run['density']:.3f}")
    info_ = machine() | ({"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {})
    name = "distributed_quick.json" if args.quick else "distributed.json"
    write_json(RESULTS / name, {"machine": info_, "epochs": epochs, "train_rows": len(splits.X_train), "runs": runs})
    print(f"wrote {RESULTS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
