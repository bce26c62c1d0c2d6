"""2:4 semi-structured weights on the sparse tensor cores against dense, on a CUDA GPU.

    python -m benchmarks.semi_structured           # needs a GPU of compute capability 8.0+
    python -m benchmarks.semi_structured --quick   # fewer shapes and repeats

Times ``F.linear`` with a 2:4 weight converted by ``torch.sparse.to_sparse_semi_structured``
(through ``sparsetrain.core.sparsity.semi_structured``, which pads to the kernels' tiles) against
the same weight dense, both in float16 and bfloat16, on the shapes of the project's MLP
(784-300-100-10) and on the large square layers where the kernels are meant to pay. Each figure
is the median of CUDA-event timings after warm-up. Also the whole MLP, end to end, at batch 256
and 16384. Ratios > 1 mean 2:4 is faster. On a machine without such a GPU it says so and exits 0.
Results: ``benchmarks/results/semi_structured.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from ._common import RESULTS, machine, write_json

LAYER_SHAPES_FULL = (  # (batch, in, out)
    (256, 784, 300), (256, 300, 100), (16384, 784, 300), (16384, 300, 100),
    (4096, 4096, 4096), (16384, 4096, 4096), (16384, 8192, 8192), (16384, 4096, 11008),
)
LAYER_SHAPES_QUICK = ((256, 784, 300), (16384, 784, 300), (16384, 4096, 4096))


def cuda_time_ms(fn, repeats: int, warmup: int = 5) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` timings by CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_layer(batch: int, n_in: int, n_out: int, dtype, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from sparsetrain.core.sparsity.semi_structured import SemiStructuredLinear, two_four

    torch.manual_seed(0)
    linear = nn.Linear(n_in, n_out).cuda().to(dtype)
    with torch.no_grad():
        linear.weight.copy_(two_four(linear.weight))
    sparse = SemiStructuredLinear(linear, dtype)
    x = torch.randn(batch, n_in, device="cuda", dtype=dtype)
    with torch.inference_mode():
        want, got = F.linear(x, linear.weight, linear.bias), sparse(x)
        error = float((got - want).abs().max() / want.abs().max())
        dense_ms = cuda_time_ms(lambda: F.linear(x, linear.weight, linear.bias), repeats)
        sparse_ms = cuda_time_ms(lambda: sparse(x), repeats)
    flops = 2 * batch * n_in * n_out
    return {
        "batch": batch, "in": n_in, "out": n_out, "dtype": str(dtype).removeprefix("torch."),
        "dense_ms": dense_ms, "two_four_ms": sparse_ms, "speedup": dense_ms / sparse_ms,
        "dense_tflops": flops / dense_ms / 1e9, "max_rel_error": error,
    }


def time_mlp(batch: int, dtype, repeats: int) -> dict:
    import torch

    from sparsetrain.core.models import build_model, prunable_weights
    from sparsetrain.core.sparsity.semi_structured import to_semi_structured, two_four

    def model():
        torch.manual_seed(0)
        net = build_model("mlp", 784, 10, hidden=(300, 100))
        with torch.no_grad():
            for w in prunable_weights(net):
                w.copy_(two_four(w))
        return net.cuda()

    dense, sparse = model().to(dtype).eval(), to_semi_structured(model(), dtype)
    x = torch.randn(batch, 784, device="cuda", dtype=dtype)
    with torch.inference_mode():
        agree = float((dense(x).argmax(1) == sparse(x).argmax(1)).float().mean())
        dense_ms = cuda_time_ms(lambda: dense(x), repeats)
        sparse_ms = cuda_time_ms(lambda: sparse(x), repeats)
    return {"model": "mlp 784-300-100-10", "batch": batch, "dtype": str(dtype).removeprefix("torch."),
            "dense_ms": dense_ms, "two_four_ms": sparse_ms, "speedup": dense_ms / sparse_ms,
            "argmax_agreement": agree}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from sparsetrain.core.sparsity.semi_structured import semi_structured_unavailable

    reason = semi_structured_unavailable("cuda")
    if reason:
        print(f"semi_structured: skipped, {reason}")
        return 0
    repeats = 10 if args.quick else 50
    shapes = LAYER_SHAPES_QUICK if args.quick else LAYER_SHAPES_FULL
    layers, mlps = [], []
    for dtype in (torch.float16, torch.bfloat16):
        for batch, n_in, n_out in shapes:
            row = time_layer(batch, n_in, n_out, dtype, repeats)
            layers.append(row)
            print(f"{row['dtype']:8s} batch {batch:6d} {n_in:5d}->{n_out:5d}: dense {row['dense_ms']:8.3f} ms "
                  f"2:4 {row['two_four_ms']:8.3f} ms  speedup {row['speedup']:.2f}x  err {row['max_rel_error']:.1e}")
        for batch in (256, 16384):
            row = time_mlp(batch, dtype, repeats)
            mlps.append(row)
            print(f"{row['dtype']:8s} MLP batch {batch:6d}: dense {row['dense_ms']:.3f} ms, 2:4 "
                  f"{row['two_four_ms']:.3f} ms, speedup {row['speedup']:.2f}x, agreement {row['argmax_agreement']:.4f}")
    info = machine() | {"gpu": torch.cuda.get_device_name(), "capability": torch.cuda.get_device_capability()}
    name = "semi_structured_quick.json" if args.quick else "semi_structured.json"
    write_json(RESULTS / name, {"machine": info, "layers": layers, "mlp": mlps})
    print(f"wrote {RESULTS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
