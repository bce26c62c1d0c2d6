"""Serving: requests/s and p50 / p99 latency of the registered model over HTTP (`mlflow models
serve`), served sparse (inference policy ``auto``) against the same model served dense.

    python -m benchmarks.serving --quick      # < 2 minutes: 6000 training rows, 2 epochs, fewer requests
    python -m benchmarks.serving              # the table of benchmarks/README.md

(from the repository root). Trains (the project's recipe, ``sparsetrain.recipe.train_network``) an
MLP 784-300-100-10 on Fashion-MNIST with ``gmp`` to 10% density, builds the served predictor
(standardizer + network, raw pixel rows in, as the registry node does), and logs it twice with
``sparsetrain.serving.log_served_model`` to a temp SQLite store: policy ``auto`` (CSR chain or
dense kernels per request, see ``sparsetrain.core.predictor``) and policy ``dense``. Both are
registered (alias ``champion``) and served by ``mlflow models serve --env-manager local``, one
uvicorn worker each, torch on ``--threads`` threads (``OMP_NUM_THREADS``; default 1, as every
timing here: two threads of sparse kernels on a loaded 2-core machine stall).

A sequential client (one keep-alive connection per server, requests of 1 and 64 test rows, full
float precision) warms each server up, then alternates between the two servers block by block, so
that load from other processes hits both alike. Two request formats: ``{"inputs": rows}`` (tensor
JSON, parsed by one ``np.array``) and ``{"dataframe_split": ...}`` (what the lifecycle check sends;
MLflow's scoring server casts such a frame column by column to the signature's type, which costs
about 55 ms for 784 columns whatever the batch size, so it gets fewer requests). The same is done
in-process for ``pyfunc.predict`` (no HTTP: what the server adds shows as the difference) and for
the network's forward pass alone (the module the policy picks, dense or chain). Ratios are
``dense / auto`` of the same run: time ratio for p50 / p99 (above 1: sparse faster), req/s
ratio ``auto / dense``. Writes ``benchmarks/results/serving.json`` (``serving_quick.json``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ._common import RESULTS, machine, write_json

BATCHES = (1, 64)
POLICIES = ("auto", "dense")
FORMATS = ("inputs", "dataframe_split")


def load_data(max_train: int | None, seed: int = 0):
    """Fashion-MNIST raw rows (the served model standardizes them itself), the official split, a
    stratified 10% of the training part for validation; returns the dataset, the fitted
    standardizer and the standardized splits."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from sparsetrain.core.data import Splits, Standardizer, load_fashion_mnist

    ds = load_fashion_mnist(max_train_samples=max_train)
    start = ds.official_test_start
    tr, va = train_test_split(np.arange(start), test_size=0.1, random_state=seed, stratify=ds.y[:start])
    scaler = Standardizer().fit(ds.X[tr])
    splits = Splits(
        scaler.transform(ds.X[tr]), ds.y[tr], scaler.transform(ds.X[va]), ds.y[va],
        scaler.transform(ds.X[start:]), ds.y[start:],
    )
    return ds, scaler, splits


def train(ds, splits, epochs: int):
    from sparsetrain.config import ModelConfig, SparsityConfig, TrainingConfig
    from sparsetrain.core.data import DatasetInfo
    from sparsetrain.recipe import train_network

    cfg = TrainingConfig(epochs=epochs, lr=1e-2, batch_size=256, lr_schedule="cosine", early_stopping=None,
                         device="cpu", seed=0, verbose=False)
    sparsity = SparsityConfig(penalty="none", strength=0.0, pruning="gmp", target_density=0.1)
    network, _ = train_network(splits, DatasetInfo.of(ds), ModelConfig(kind="mlp", hidden=(300, 100)), sparsity, cfg)
    return network.eval()


def log_both(predictor, example, root: Path) -> dict[str, str]:
    """Log the predictor once per policy to a temp SQLite store, register it; name by policy."""
    import mlflow
    from mlflow import MlflowClient

    from sparsetrain.serving import log_served_model

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("serving", artifact_location=str(root / "art")))
    names = {}
    for policy in POLICIES:
        with mlflow.start_run(run_name=f"serving-{policy}"):
            uri = log_served_model(predictor, example, policy=policy)
        name = f"fashion-mlp-{policy}"
        version = mlflow.register_model(uri, name).version
        MlflowClient().set_registered_model_alias(name, "champion", version)
        names[policy] = name
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(name: str, root: Path, threads: int) -> tuple[subprocess.Popen, int]:
    """`mlflow models serve` in its own process group (stopped with the group)."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env, stdout=(root / f"{name}.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    return proc, port


def wait_up(proc: subprocess.Popen, port: int, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"mlflow models serve did not answer /ping in {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Client:
    """One keep-alive HTTP connection; ``post`` returns (seconds, status, parsed body). uvicorn
    closes a connection idle for 5 s: then it reconnects and times the retry alone."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def _post(self, body: bytes) -> tuple[float, int, dict]:
        start = time.perf_counter()
        self.conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        return time.perf_counter() - start, response.status, json.loads(data)

    def post(self, body: bytes) -> tuple[float, int, dict]:
        try:
            return self._post(body)
        except (ConnectionError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return self._post(body)


def bodies(X, batch: int, count: int, seed: int) -> list[tuple[object, dict[str, bytes]]]:
    """``count`` requests of ``batch`` random test rows: (rows, JSON body by format)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    columns = [str(i) for i in range(X.shape[1])]
    out = []
    for _ in range(count):
        rows = X[rng.integers(0, len(X), batch)].astype(np.float64)
        data = rows.tolist()
        out.append((rows, {
            "inputs": json.dumps({"inputs": data}).encode(),
            "dataframe_split": json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode(),
        }))
    return out


def interleave(calls: dict, requests: int, block: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of every ``calls[key]()`` (which returns its own duration), ``warmup``
    calls each first, then blocks of ``block`` calls alternating between the keys."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {key: [] for key in calls}
    while min(len(t) for t in times.values()) < requests:
        for key, call in calls.items():
            times[key].extend(call() for _ in range(block))
    return times


def summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(ordered), "req_per_s": len(ordered) / sum(ordered), "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * p99}


def cycler(items, fn):
    """A call that applies ``fn`` to the next item, round robin, and returns its duration."""
    state = {"i": 0}

    def call() -> float:
        item = items[state["i"] % len(items)]
        state["i"] += 1
        return fn(item)

    return call


def timed(fn):
    def run(item) -> float:
        start = time.perf_counter()
        fn(item)
        return time.perf_counter() - start

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6000 training rows, 2 epochs, fewer requests")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (full default 8)")
    parser.add_argument("--requests", type=int, default=None, help="timed `inputs` requests per server at batch 1 "
                        "(full 2000; a quarter at batch 64; dataframe_split: a fifth)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each server and in-process")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    q = args.quick
    epochs = args.epochs or (2 if q else 8)
    base = args.requests or (300 if q else 2000)
    n_http = {("inputs", 1): base, ("inputs", 64): max(50, base // 4)}
    n_http.update({("dataframe_split", b): max(40, n // 5) for (_, b), n in list(n_http.items())})
    wall_start = time.perf_counter()

    import mlflow
    import torch

    from sparsetrain.core.metrics import sparsity_metrics
    from sparsetrain.serving import build_predictor, input_example

    torch.set_num_threads(args.threads)
    info_machine = machine()
    ds, scaler, splits = load_data(6000 if q else None)
    print(f"serving: training an MLP 784-300-100-10 with gmp to 10% ({epochs} epochs)", flush=True)
    started = time.perf_counter()
    network = train(ds, splits, epochs)
    train_s = time.perf_counter() - started
    predictor = build_predictor(scaler, None, network, ds)
    X_test = ds.X[ds.official_test_start:]
    accuracy = float((predictor.predict(X_test) == ds.y[ds.official_test_start:]).mean())
    density = sparsity_metrics(network)["density"]
    print(f"  trained in {train_s:.0f}s: test accuracy {100 * accuracy:.2f}%, density {100 * density:.1f}%", flush=True)

    with tempfile.TemporaryDirectory(prefix="sparsetrain-serving-") as tmp:
        root = Path(tmp)
        names = log_both(predictor, input_example(ds), root)
        models = {p: mlflow.pyfunc.load_model(f"models:/{names[p]}@champion") for p in POLICIES}
        inference = {p: models[p].unwrap_python_model().predictor.inference for p in POLICIES}
        picks = {b: {p: "csr chain" if inference[p].uses_chain(b) else "dense" for p in POLICIES} for b in BATCHES}
        servers = {p: start_server(names[p], root, args.threads) for p in POLICIES}
        try:
            for p, (proc, port) in servers.items():
                wait_up(proc, port, root / f"{names[p]}.log")
            print(f"servers up after {time.perf_counter() - wall_start:.0f}s; policy picks {picks}", flush=True)
            clients = {p: Client(port) for p, (_, port) in servers.items()}
            results: dict = {}
            for b in BATCHES:
                reqs = bodies(X_test, b, 32, seed=b)
                for rows, body in reqs[:4]:  # both servers answer what pyfunc predicts, in both formats
                    want = models["dense"].predict(rows).tolist()
                    for p in POLICIES:
                        for fmt in FORMATS:
                            _, status, answer = clients[p].post(body[fmt])
                            assert status == 200 and answer["predictions"] == want, (p, fmt, status, str(answer)[:300])
                for fmt in FORMATS:
                    n = n_http[(fmt, b)]
                    print(f"batch {b}: {n} timed {fmt} requests per server over HTTP", flush=True)
                    times = interleave({p: cycler(reqs, lambda r, c=clients[p], f=fmt: c.post(r[1][f])[0])
                                        for p in POLICIES}, n, block=25 if b == 1 else 10, warmup=30 if b == 1 else 10)
                    results[(f"http {fmt}", b)] = {p: summary(times[p]) for p in POLICIES}
                n_proc = 4 * n_http[("inputs", b)]
                pyfunc_times = interleave({p: cycler(reqs, timed(lambda r, m=models[p]: m.predict(r[0])))
                                           for p in POLICIES}, n_proc, block=50, warmup=20)
                features = [torch.from_numpy(predictor.features(rows)) for rows, _ in reqs]

                def forward(x, inf):
                    with torch.inference_mode():
                        inf.module(x.shape[0])(x)

                net_times = interleave({p: cycler(features, timed(lambda x, i=inference[p]: forward(x, i)))
                                        for p in POLICIES}, 10 * n_http[("inputs", b)], block=100, warmup=50)
                for path, times in (("pyfunc", pyfunc_times), ("network", net_times)):
                    results[(path, b)] = {p: summary(times[p]) for p in POLICIES}
        finally:
            for proc, _ in servers.values():
                stop(proc)

    table = []
    order = ["http inputs", "http dataframe_split", "pyfunc", "network"]
    for (path, b), by_policy in sorted(results.items(), key=lambda item: (order.index(item[0][0]), item[0][1])):
        auto, dense = by_policy["auto"], by_policy["dense"]
        table.append({
            "path": path, "batch": b, "auto_uses": picks[b]["auto"], "auto": auto, "dense": dense,
            "req_per_s_ratio": auto["req_per_s"] / dense["req_per_s"],
            "p50_ratio": dense["p50_ms"] / auto["p50_ms"], "p99_ratio": dense["p99_ms"] / auto["p99_ms"],
        })
    wall = time.perf_counter() - wall_start
    print(f"\nServing the 784-300-100-10 MLP at {100 * density:.1f}% density (test accuracy {100 * accuracy:.2f}%), "
          f"policy auto vs dense, {args.threads} torch thread(s){' [quick]' if q else ''}")
    print(f"machine: {info_machine['cpu']}, {info_machine['cores']} cores, torch {info_machine['torch']}, "
          f"load at start {', '.join(f'{x:.2f}' for x in info_machine['loadavg_at_start'])}")
    head = (f"{'path':20} {'batch':>5} {'auto uses':10} | {'auto req/s':>10} {'dense req/s':>11} {'ratio':>5} | "
            f"{'auto p50':>8} {'dense p50':>9} {'ratio':>5} | {'auto p99':>8} {'dense p99':>9} {'ratio':>5}")
    print(head)
    print("-" * len(head))
    for r in table:
        a, d = r["auto"], r["dense"]
        print(f"{r['path']:20} {r['batch']:5d} {r['auto_uses']:10} | {a['req_per_s']:10.0f} {d['req_per_s']:11.0f} "
              f"{r['req_per_s_ratio']:5.2f} | {a['p50_ms']:8.3f} {d['p50_ms']:9.3f} {r['p50_ratio']:5.2f} | "
              f"{a['p99_ms']:8.3f} {d['p99_ms']:9.3f} {r['p99_ratio']:5.2f}")
    print("(ms; ratios: req/s auto / dense, latency dense / auto: above 1 = sparse faster)")
    print(f"\nwall time {wall:.0f}s")
    out = Path(args.out) if args.out else RESULTS / ("serving_quick.json" if q else "serving.json")
    write_json(out, {
        "benchmark": "serving", "quick": q, "epochs": epochs, "threads": args.threads, "machine": info_machine,
        "density": density, "test_accuracy": accuracy, "train_seconds": train_s, "policy_picks": picks,
        "requests": {f"{fmt} batch {b}": n for (fmt, b), n in n_http.items()}, "inference": {p: inference[p].describe() for p in POLICIES}, "table": table,
        "wall_seconds": wall,
    })
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
