"""What sparsity buys at inference: stored bytes, batch-1 latency, batch-64 / 1024 throughput.

    python -m benchmarks.inference --quick      # < 2 minutes: 6000 training rows, 3 epochs
    python -m benchmarks.inference              # the table of benchmarks/README.md

(from the repository root). Trains (with the project's recipe, ``sparsetrain.recipe.train_network``)
an MLP 784-300-100-10 on Fashion-MNIST dense, with ``gmp`` at 10% and 5% density, and with
``structured`` pruning (10% and 30% of the hidden units kept, physically smaller networks). Then, with ``torch.set_num_threads(1)``
and interleaved repeats (each round times every variant, so that load from other processes hits
them all alike), it measures the median time per call of

- ``dense``: the model as trained, dense fp32 kernels (zeros included) -- the baseline;
- ``csr``: ``export.to_sparse_inference(model)`` (CSR products for layers at <= 30% density);
- ``loaded``: ``export.to_sparse_inference(export.from_bytes(export.to_bytes(model)))``, the model
  loaded back from the exported safetensors file (its predictions are checked against the original);
- ``structured``: the physically smaller network, dense kernels.

Bytes: the exported sparse file (``export.to_bytes``) against the dense fp32 safetensors file of
the full-size network. Ratios are against ``dense`` of the same run: bytes ratio = sparse / dense
(smaller is better), speed ratio = dense time / variant time (bigger is better).
Writes ``benchmarks/results/inference.json`` (``inference_quick.json``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from ._common import RESULTS, accuracy, load_splits, machine, write_json

BATCHES = (1, 64, 1024)

# Targets of the benchmarks issue.
BYTES_LIMIT_AT_10 = 0.15  # stored sparse / dense bytes at 10% density
THROUGHPUT_MIN = 2.0  # sparse / dense throughput at batch >= 64, density <= 10%


def train(splits, info, name: str, sparsity: dict, epochs: int, seed: int = 0):
    from sparsetrain.config import ModelConfig, SparsityConfig, TrainingConfig
    from sparsetrain.recipe import train_network

    cfg = TrainingConfig(epochs=epochs, lr=1e-2, batch_size=256, lr_schedule="cosine", early_stopping=5,
                         device="cpu", seed=seed, verbose=False)
    started = time.perf_counter()
    net, history = train_network(splits, info, ModelConfig(kind="mlp", hidden=(300, 100)), SparsityConfig(**sparsity), cfg)
    print(f"  trained {name:16} in {time.perf_counter() - started:5.1f}s ({history.epochs_run} epochs)", flush=True)
    return net.eval()


def time_variants(variants: dict, inputs: dict, rounds: int, calls: dict) -> dict:
    """Median seconds per call of every (variant, batch), interleaving variants round by round."""
    import torch

    times = {(v, b): [] for v in variants for b in inputs}
    with torch.inference_mode():
        for v, model in variants.items():  # warm-up
            for b, x in inputs.items():
                model(x)
        for _ in range(rounds):
            for b, x in inputs.items():
                for v, model in variants.items():
                    for _ in range(calls[b]):
                        start = time.perf_counter()
                        model(x)
                        times[(v, b)].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6000 training rows, 3 epochs, fewer repeats")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (full default 10)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (full 15)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    q = args.quick
    epochs = args.epochs or (3 if q else 10)
    rounds = args.rounds or (4 if q else 15)
    calls = {1: 40, 64: 10, 1024: 2} if q else {1: 60, 64: 15, 1024: 3}
    wall_start = time.perf_counter()

    import torch
    from safetensors.torch import save as st_save

    from sparsetrain.core.export import from_bytes, to_bytes, to_sparse_inference
    from sparsetrain.core.metrics import sparsity_metrics
    from sparsetrain.core.models import prunable_weights

    torch.set_num_threads(1)
    info_machine = machine()
    splits, info = load_splits(6000 if q else None)
    none = {"penalty": "none", "strength": 0.0}
    specs = {
        "dense": {**none, "pruning": "none"},
        "gmp 10%": {**none, "pruning": "gmp", "target_density": 0.10},
        "gmp 5%": {**none, "pruning": "gmp", "target_density": 0.05},
        "structured 30%": {**none, "pruning": "structured", "target_density": 0.30, "finetune_epochs": 1 if q else 3},
        "structured 10%": {**none, "pruning": "structured", "target_density": 0.10, "finetune_epochs": 1 if q else 3},
    }
    print(f"inference: training {len(specs)} MLPs 784-300-100-10 ({epochs} epochs)", flush=True)
    models = {name: train(splits, info, name, spec, epochs) for name, spec in specs.items()}
    dense = models["dense"]
    full_prunable = sum(w.numel() for w in prunable_weights(dense))
    dense_file = st_save({k: v.contiguous() for k, v in dense.state_dict().items()})
    dense_bytes = len(dense_file)

    rng = torch.Generator().manual_seed(0)
    X_test = torch.as_tensor(splits.X_test)
    inputs = {b: X_test[torch.randint(len(X_test), (b,), generator=rng)] for b in BATCHES}

    # Variants: every model's kernels are timed in one interleaved session.
    variants: dict = {"dense": dense}
    rows_meta: list[dict] = [{
        "model": "dense", "variant": "dense", "density": 1.0, "bytes": dense_bytes,
        "test_accuracy": accuracy(dense, splits.X_test, splits.y_test),
    }]
    for name, model in models.items():
        if name == "dense":
            continue
        sm = sparsity_metrics(model)
        density = sm["prunable_nonzero"] / full_prunable
        data = to_bytes(model)
        loaded = from_bytes(data)
        with torch.inference_mode():
            same = bool(torch.equal(loaded(X_test[:512]), model(X_test[:512])))
        acc = accuracy(model, splits.X_test, splits.y_test)
        base = {"model": name, "density": density, "bytes": len(data), "test_accuracy": acc, "round_trip_exact": same}
        if name.startswith("structured"):
            variants[name] = model
            rows_meta.append({**base, "variant": "structured"})
            variants[name + " loaded"] = from_bytes(data)
            rows_meta.append({**base, "variant": "structured loaded"})
        else:
            variants[name + " dense"] = model
            rows_meta.append({**base, "variant": "dense kernels", "bytes": dense_bytes})
            variants[name + " csr"] = to_sparse_inference(model)
            rows_meta.append({**base, "variant": "csr"})
            variants[name + " loaded"] = to_sparse_inference(loaded)
            rows_meta.append({**base, "variant": "loaded csr"})
    print(f"timing {len(variants)} variants x batches {BATCHES}, {rounds} interleaved rounds, 1 thread", flush=True)
    medians = time_variants(variants, inputs, rounds, calls)

    keys = list(variants)
    table = []
    for key, meta in zip(keys, rows_meta):
        row = dict(meta)
        row["key"] = key
        row["bytes_ratio"] = meta["bytes"] / dense_bytes
        for b in BATCHES:
            t, t0 = medians[(key, b)], medians[("dense", b)]
            row[f"b{b}_ms"] = 1000 * t
            row[f"b{b}_per_s"] = b / t
            row[f"b{b}_ratio"] = t0 / t
        table.append(row)

    # Targets
    def find(model: str, variant: str) -> dict:
        return next(r for r in table if r["model"] == model and r["variant"] == variant)

    checks = []
    g10 = find("gmp 10%", "csr")
    checks.append({
        "target": "stored bytes at 10% density <= 15% of dense", "measured": g10["bytes_ratio"],
        "limit": BYTES_LIMIT_AT_10, "met": g10["bytes_ratio"] <= BYTES_LIMIT_AT_10,
    })
    for model in ("gmp 10%", "gmp 5%"):
        for variant in ("csr", "loaded csr"):
            row = find(model, variant)
            for b in (64, 1024):
                checks.append({
                    "target": f"{model} {variant}: throughput at batch {b} >= 2x dense",
                    "measured": row[f"b{b}_ratio"], "limit": THROUGHPUT_MIN, "met": row[f"b{b}_ratio"] >= THROUGHPUT_MIN,
                })
    for model in ("structured 30%", "structured 10%"):
        row = find(model, "structured")
        checks.append({
            "target": f"{model}: faster than dense at batch 1", "measured": row["b1_ratio"], "limit": 1.0,
            "met": row["b1_ratio"] > 1.0,
        })
    for model in ("gmp 10%", "gmp 5%"):  # informative: the sparse kernel at batch 1
        row = find(model, "csr")
        checks.append({"target": f"{model} csr at batch 1 (informative, no target)", "measured": row["b1_ratio"],
                       "limit": None, "met": None})
    wall = time.perf_counter() - wall_start

    print(f"\nInference on CPU, 1 thread (ratios vs 'dense' in this run: bytes = stored / dense, "
          f"speed = dense time / time){' [quick]' if q else ''}")
    head = (f"{'model':15} {'variant':17} {'density':>7} {'acc':>6} {'bytes':>9} {'ratio':>6} | "
            f"{'b1 ms':>7} {'ratio':>5} | {'b64 /s':>8} {'ratio':>5} | {'b1024 /s':>8} {'ratio':>5}")
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['model']:15} {r['variant']:17} {100 * r['density']:6.1f}% {100 * r['test_accuracy']:6.2f} "
              f"{r['bytes']:9d} {r['bytes_ratio']:6.3f} | {r['b1_ms']:7.3f} {r['b1_ratio']:5.2f} | "
              f"{r['b64_per_s']:8.0f} {r['b64_ratio']:5.2f} | {r['b1024_per_s']:8.0f} {r['b1024_ratio']:5.2f}")
    print("\ntargets")
    for c in checks:
        verdict = "" if c["met"] is None else ("met" if c["met"] else "MISSED")
        limit = "" if c["limit"] is None else f" (limit {c['limit']:g})"
        print(f"  {c['target']:55} {c['measured']:.3f}{limit} {verdict}")
    if not all(r.get("round_trip_exact", True) for r in table):
        print("WARNING: a loaded-back model does not reproduce the original's outputs exactly")
    print(f"\nwall time {wall:.0f}s")
    out = Path(args.out) if args.out else RESULTS / ("inference_quick.json" if q else "inference.json")
    write_json(out, {
        "benchmark": "inference", "quick": q, "epochs": epochs, "rounds": rounds, "calls_per_round": calls,
        "threads": 1, "machine": info_machine, "dense_bytes": dense_bytes, "table": table, "targets": checks,
        "wall_seconds": wall,
    })
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
