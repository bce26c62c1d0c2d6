"""Sweep throughput: trials per minute with 1, 2 and 4 workers, SQLite against PostgreSQL + an MLflow server.

    python -m benchmarks.sweep_workers            # 1, 2, 4 workers, 4 trials each
    python -m benchmarks.sweep_workers --quick    # 1 and 2 workers, 2 trials each

Each worker is a `kedro run --pipelines sweep` process, started together with the others on one
study, as README "Scale out" starts them; each setting gets a fresh study and a fresh MLflow store:
- ``sqlite``: the laptop default, the Optuna study and the MLflow store in SQLite files of one
  project folder;
- ``postgresql``: the Optuna study in a PostgreSQL database and the runs on an ``mlflow server``
  whose backend store is another database of the same cluster (artifacts proxied to a folder).
The cluster and the server are the throwaway ones the scale-out tests start (``tests/services.py``,
PostgreSQL's server binaries needed). The trials train the default digits model for
``training.epochs`` epochs. Reported: the wall time from the first start to the last exit,
trials per minute over it (workers x trials / wall), the mean trial duration (Optuna's start to
complete) and the speed-up against one worker of the same store. Both stores are measured in the
same run, on the same machine. Results: ``benchmarks/results/sweep_workers.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import RESULTS, machine, write_json

ROOT = Path(__file__).resolve().parent.parent


def tests_module(name: str):
    """A module of tests/ (services.py: the throwaway stores; kedro_project.py: the scratch
    project), the one place that knows how to make them."""
    spec = importlib.util.spec_from_file_location(f"sparsetrain_tests_{name}", ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_workers(project: Path, n_workers: int, n_trials: int, storage: str | None, tracking_uri: str,
                study: str, epochs: int) -> dict:
    import optuna

    params = [f"sweep.study_name={study}", f"sweep.n_trials={n_trials}", f"training.epochs={epochs}"]
    if storage:
        params.append(f"sweep.storage={storage}")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "KEDRO_DISABLE_TELEMETRY": "1"}
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", "sweep", "--params", ",".join(params)]
    logs = [project / f"{study}-w{i}.log" for i in range(n_workers)]
    started = time.perf_counter()
    outs = [open(log, "w") for log in logs]
    procs = [subprocess.Popen(cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT) for out in outs]
    codes = [p.wait(timeout=1800) for p in procs]
    for out in outs:
        out.close()
    wall = time.perf_counter() - started
    if any(codes):
        bad = codes.index(next(c for c in codes if c))
        raise RuntimeError(f"worker {bad} of '{study}' failed:\n{logs[bad].read_text()[-2000:]}")
    url = storage or f"sqlite:///{project / 'data/08_reporting/sweep/optuna.db'}"
    trials = optuna.load_study(study_name=study, storage=url).trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == n_workers * n_trials, f"trials {numbers}"
    return {
        "workers": n_workers, "trials": len(done), "wall_seconds": wall,
        "trials_per_minute": 60 * len(done) / wall,
        "mean_trial_seconds": statistics.mean((t.datetime_complete - t.datetime_start).total_seconds() for t in done),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    worker_counts, n_trials = ((1, 2), 2) if args.quick else ((1, 2, 4), 4)
    svc, projects = tests_module("services"), tests_module("kedro_project")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sparsetrain-sweep-bench-") as tmp:
        tmp = Path(tmp)
        cluster = svc.Postgres().start()
        try:
            for n in worker_counts:
                for store in ("sqlite", "postgresql"):
                    study = f"{store}-{n}"
                    project = projects.copy_project(tmp / study)
                    if store == "sqlite":
                        row = run_workers(project, n, n_trials, None, f"sqlite:///{project / 'mlflow.db'}",
                                          study, args.epochs)
                    else:
                        optuna_db = cluster.create_database(f"optuna_{n}")
                        server = svc.MlflowServer(cluster.create_database(f"mlflow_{n}"), tmp / f"art-{n}",
                                                  tmp / f"server-{n}.log").start()
                        try:
                            row = run_workers(project, n, n_trials, optuna_db, server.uri, study, args.epochs)
                        finally:
                            server.stop()
                    row["store"] = store
                    base = next((r for r in rows if r["store"] == store and r["workers"] == worker_counts[0]), row)
                    row["speedup"] = row["trials_per_minute"] / base["trials_per_minute"]
                    rows.append(row)
                    print(f"{store:10s} {n} worker(s): {row['trials']} trials in {row['wall_seconds']:6.1f} s = "
                          f"{row['trials_per_minute']:5.2f} trials/min (x{row['speedup']:.2f}), "
                          f"mean trial {row['mean_trial_seconds']:.1f} s", flush=True)
        finally:
            cluster.stop()
    for n in worker_counts:
        sq, pg = (next(r for r in rows if r["store"] == s and r["workers"] == n) for s in ("sqlite", "postgresql"))
        print(f"{n} worker(s): postgresql / sqlite throughput ratio {pg['trials_per_minute'] / sq['trials_per_minute']:.2f}")
    name = "sweep_workers_quick.json" if args.quick else "sweep_workers.json"
    write_json(RESULTS / name, {"machine": machine(), "epochs": args.epochs, "trials_per_worker": n_trials,
                                "runs": rows})
    print(f"wrote {RESULTS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
