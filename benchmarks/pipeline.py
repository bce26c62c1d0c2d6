"""Pipeline overhead: where the wall time of `kedro run` goes, and a sweep's per-trial overhead.

    python -m benchmarks.pipeline --quick     # 1 default run + a 3-trial sweep (< 2 minutes)
    python -m benchmarks.pipeline             # 3 default runs, 1 `kedro run` CLI run, a 10-trial sweep

(from the repository root; each worker process runs this module too, found through ``PYTHONPATH``).

Each run happens in a fresh Python process (so that imports are really paid), in a scratch copy of
the project (``conf/base``, ``pyproject.toml``, an empty ``src/``; the package is the installed one) with
``MLFLOW_TRACKING_URI`` pointing at a temp SQLite store, so that nothing of the real project's
``mlflow.db`` or ``data/`` is touched. The worker opens a ``KedroSession`` in-process and times it
with pluggy's hook-call monitoring on the session's hook manager (nothing is registered into the
project): node functions run between the ``before_node_run`` and ``after_node_run`` hook calls,
dataset saves between ``before_dataset_saved`` and ``after_dataset_saved``, and every hook call
(kedro-mlflow's run set-up, parameter logging and run closing are hooks) is timed as a whole.

Phases of the default pipeline (digits, L1 logistic model):
- import: kedro, kedro-mlflow, mlflow, torch and the project's pipelines;
- setup: session creation, context and catalog until the first node;
- data: ingestion and compression nodes; train: ``train_model``; evaluate: evaluation nodes;
- MLflow logging: kedro-mlflow hooks, saves of MLflow datasets (if the catalog has any), the
  ``report_run`` node (metrics, and the run's files written and logged, PNG rendering included)
  and the ``register_model`` node (pyfunc model + sparse export + registry version);
- I/O: saves and loads of the other catalog datasets (pickle / JSON files, memory);
- other: the rest of the process (runner bookkeeping, session close, interpreter exit).

The sweep (``kedro run --pipelines sweep``, when the project has one) is compared with training
alone: the ``run_sweep`` node's wall time per trial against each trial's own ``train_seconds``
(MLflow metric of its nested run). Writes ``benchmarks/results/pipeline.json``.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from ._common import RESULTS, machine, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("import", "setup", "data", "train", "evaluate", "mlflow", "io", "sweep", "other")
NODE_PHASE = {
    "load_source": "data", "describe_dataset": "data", "split_data": "data", "fit_standardizer": "data",
    "standardize": "data", "compress": "data",
    "train_model": "train",
    "evaluate_model": "evaluate", "plot_evaluation": "evaluate",
    "list_selected_features": "evaluate", "score_feature_selection": "evaluate",
    "cross_validate_recipe": "evaluate",
    # report_run logs metrics and writes + logs the run's files (PNG rendering included), as the
    # MLflow dataset saves did before it; register_model logs and registers the model
    "report_run": "mlflow", "register_model": "mlflow",
}


# ------------------------------------------------------------------------------------------------
# worker: one in-process `kedro run` of the scratch project, timed


def mlflow_datasets(project: Path) -> list[str]:
    """Catalog entries (or factory patterns) backed by kedro-mlflow datasets."""
    import yaml

    names = []
    for path in sorted((project / "conf" / "base").glob("catalog*.yml")):
        for name, entry in (yaml.safe_load(path.read_text()) or {}).items():
            if isinstance(entry, dict) and str(entry.get("type", "")).startswith("kedro_mlflow"):
                names.append(name)
    return names


def _matches(name: str, patterns: list[str]) -> bool:
    import re

    for pattern in patterns:
        regex = "^" + re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(pattern)) + "$"
        if re.match(regex, name):
            return True
    return False


def worker(project: Path, pipeline: str, runtime_params: dict, out: Path) -> None:
    import importlib

    for module in ("torch", "mlflow", "kedro_mlflow", "kedro.framework.session", "sparsetrain.pipeline_registry"):
        importlib.import_module(module)
    t_import = time.perf_counter()

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    session = KedroSession.create(project_path=project, runtime_params=runtime_params or None)
    manager = session._hook_manager
    mlflow_names = mlflow_datasets(project)

    hook_time: dict[str, float] = {}
    node_time: dict[str, float] = {}
    save_time: dict[str, float] = {}
    load_time: dict[str, float] = {}
    marks: dict[str, float] = {}
    first_node: list[float] = []
    calls: list[tuple[str, float]] = []

    def before(hook_name, hook_impls, kwargs):
        now = time.perf_counter()
        calls.append((hook_name, now))
        if hook_name == "before_node_run" and not first_node:
            first_node.append(now)
        key = _key(hook_name, kwargs)
        if hook_name == "after_node_run" and key in marks:
            node_time[key] = node_time.get(key, 0.0) + now - marks.pop(key)
        elif hook_name == "after_dataset_saved" and key in marks:
            save_time[key] = save_time.get(key, 0.0) + now - marks.pop(key)
        elif hook_name == "after_dataset_loaded" and key in marks:
            load_time[key] = load_time.get(key, 0.0) + now - marks.pop(key)

    def after(outcome, hook_name, hook_impls, kwargs):
        now = time.perf_counter()
        name, started = calls.pop()
        hook_time[hook_name] = hook_time.get(hook_name, 0.0) + now - started
        if hook_name in ("before_node_run", "before_dataset_saved", "before_dataset_loaded"):
            marks[_key(hook_name.replace("before_", "after_"), kwargs)] = now

    def _key(hook_name, kwargs):
        if "node" in kwargs and "dataset_name" not in kwargs:
            return f"{hook_name}:{kwargs['node'].name}"
        return f"{hook_name}:{kwargs.get('dataset_name')}"

    manager.add_hookcall_monitoring(before, after)
    plugins = sorted({type(p).__module__ + "." + type(p).__name__ for p in manager.get_plugins()})
    t_session = time.perf_counter()
    error = None
    try:
        session.run(pipeline_name=pipeline)
    except Exception as exc:  # report, do not hide: the parent prints it
        error = f"{type(exc).__name__}: {exc}"
    finally:
        session.close()
    t_end = time.perf_counter()

    def strip(d):
        return {k.split(":", 1)[1]: v for k, v in d.items()}

    record = {
        "pipeline": pipeline, "error": error, "plugins": plugins,
        "import_s": t_import - _T_START,
        "session_create_s": t_session - t_import,
        "until_first_node_s": (first_node[0] if first_node else t_end) - t_session,
        "run_s": t_end - t_session,
        "total_in_process_s": t_end - _T_START,
        "node_s": strip(node_time), "save_s": strip(save_time), "load_s": strip(load_time),
        "hook_s": hook_time, "mlflow_datasets": mlflow_names,
    }
    if pipeline == "sweep":
        record["trials"] = sweep_trials()
    write_json(out, record)


def sweep_trials() -> list[dict]:
    """Nested runs (trials) of the latest parent run in the scratch store: wall and train seconds."""
    import mlflow

    client = mlflow.MlflowClient()
    trials = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            if "mlflow.parentRunId" not in run.data.tags:
                continue
            info = run.info
            trials.append({
                "run_name": info.run_name, "status": info.status,
                "wall_s": ((info.end_time or info.start_time) - info.start_time) / 1000.0,
                "train_seconds": run.data.metrics.get("train_seconds"),
            })
    return trials


# ------------------------------------------------------------------------------------------------
# parent: scratch project, subprocesses, table


def scratch_project() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="sparsetrain-bench-"))
    shutil.copytree(ROOT / "conf" / "base", folder / "conf" / "base")
    (folder / "conf" / "local").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    (folder / "src").mkdir()  # kedro wants it; the package itself comes from the installed project
    for layer in ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models",
                  "07_model_output", "08_reporting"):
        (folder / "data" / layer).mkdir(parents=True)
    return folder


def child_env(project: Path) -> dict:
    env = dict(os.environ)
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}", KEDRO_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore",
    )
    return env


def run_worker(project: Path, pipeline: str, params: dict, tag: str, timeout: int) -> dict:
    out = project / f"timing_{tag}.json"
    cmd = [sys.executable, "-m", "benchmarks.pipeline", "--worker", "--project", str(project),
           "--pipeline", pipeline, "--params", json.dumps(params), "--record", str(out)]
    env = child_env(project)  # the worker runs in the scratch project: say where this package is
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if not out.exists():
        return {"pipeline": pipeline, "error": f"worker exited {proc.returncode}: {proc.stderr[-2000:]}", "wall_s": wall}
    record = json.loads(out.read_text())
    record["wall_s"] = wall
    return record


def run_cli(project: Path, timeout: int) -> dict:
    kedro = Path(sys.executable).parent / "kedro"
    started = time.perf_counter()
    proc = subprocess.run([str(kedro), "run"], cwd=project, env=child_env(project), capture_output=True, text=True,
                          timeout=timeout)
    return {"wall_s": time.perf_counter() - started, "returncode": proc.returncode,
            "error": None if proc.returncode == 0 else proc.stderr[-2000:]}


def mlflow_detail(record: dict) -> dict[str, float]:
    """The MLflow logging phase in its three parts."""
    names = record["mlflow_datasets"]
    return {
        "kedro-mlflow hooks": sum(s for h, s in record["hook_s"].items()
                                  if h not in ("after_context_created", "after_catalog_created")),
        "MLflow dataset saves": sum(s for n, s in list(record["save_s"].items()) + list(record["load_s"].items())
                                    if _matches(n, names)),
        "register_model node": record["node_s"].get("register_model", 0.0),
    }


def phases(record: dict) -> dict[str, float]:
    """Split one default run into the phases of the module docstring."""
    mlflow_names = record["mlflow_datasets"]
    p = dict.fromkeys(PHASES, 0.0)
    p["import"] = record["import_s"]
    p["setup"] = record["session_create_s"] + record["until_first_node_s"]
    for name, seconds in record["node_s"].items():
        p[NODE_PHASE.get(name, "sweep" if record["pipeline"] == "sweep" else "other")] += seconds
    for name, seconds in list(record["save_s"].items()) + list(record["load_s"].items()):
        p["mlflow" if _matches(name, mlflow_names) else "io"] += seconds
    # Hook calls: kedro-mlflow's work (its before_pipeline_run starts the run, before_node_run logs
    # parameters, after_pipeline_run ends it). The dataset / node hooks bracket what is timed above,
    # and the context hooks before the first node belong to setup.
    for hook, seconds in record["hook_s"].items():
        if hook in ("after_context_created", "after_catalog_created"):
            continue
        p["mlflow"] += seconds
    p["other"] = max(0.0, record["wall_s"] - sum(v for k, v in p.items() if k != "other"))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 default run and a 3-trial sweep")
    parser.add_argument("--repeats", type=int, default=None, help="default `kedro run`s timed (full 3)")
    parser.add_argument("--trials", type=int, default=None, help="sweep trials (full 10)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", default="__default__", help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--record", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(Path(args.project), args.pipeline, json.loads(args.params), Path(args.record))
        return 0

    q = args.quick
    repeats = args.repeats or (1 if q else 3)
    n_trials = args.trials or (3 if q else 10)
    wall_start = time.perf_counter()
    project = scratch_project()
    print(f"pipeline: scratch project {project}", flush=True)
    runs = []
    for i in range(repeats):
        record = run_worker(project, "__default__", {}, f"default_{i}", timeout=600)
        if record.get("error"):
            print(f"  default run {i}: FAILED: {record['error'][:400]}")
        else:
            print(f"  default run {i}: {record['wall_s']:.1f}s", flush=True)
        runs.append(record)
    cli = None if q else run_cli(project, timeout=600)
    if cli:
        print(f"  `kedro run` CLI: {cli['wall_s']:.1f}s (rc {cli['returncode']})", flush=True)

    has_sweep = (ROOT / "src" / "sparsetrain" / "pipelines" / "sweep").is_dir()
    sweep = None
    if has_sweep:
        sweep = run_worker(project, "sweep", {"sweep": {"n_trials": n_trials}}, "sweep", timeout=900)
        if sweep.get("error"):
            print(f"  sweep: FAILED: {sweep['error'][:400]}")
        else:
            print(f"  sweep of {n_trials} trials: {sweep['wall_s']:.1f}s", flush=True)

    # ---- default run table
    ok = [r for r in runs if not r.get("error")]
    result: dict = {"benchmark": "pipeline", "quick": q, "repeats": repeats, "project": "default `kedro run` "
                    "(conf/base: digits, linear model, L1)", "runs": runs, "cli": cli}
    if ok:
        split = [phases(r) for r in ok]
        med = {k: statistics.median(s[k] for s in split) for k in PHASES}
        total = statistics.median(r["wall_s"] for r in ok)
        train = med["train"]
        print(f"\n`kedro run` (default pipeline) wall time by phase, median of {len(ok)} fresh process(es); "
              f"ratio = phase / train")
        print(f"{'phase':16} {'seconds':>8} {'share':>7} {'ratio':>7}")
        for k in PHASES:
            if k == "sweep":
                continue
            print(f"{(k + ' logging') if k == 'mlflow' else k:16} {med[k]:8.2f} {100 * med[k] / total:6.1f}% {med[k] / train if train else float('nan'):7.2f}")
        print(f"{'total':16} {total:8.2f} {100.0:6.1f}% {total / train if train else float('nan'):7.2f}")
        detail = {k: statistics.median(mlflow_detail(r)[k] for r in ok) for k in mlflow_detail(ok[0])}
        for k, v in detail.items():
            print(f"  {'- ' + k:22} {v:8.2f} {100 * v / total:6.1f}% {v / train if train else float('nan'):7.2f}")
        overhead = (total - train) / train if train else None
        print(f"overhead (everything but training) / training = {overhead:.1f}x" if overhead else "")
        if cli and cli["returncode"] == 0:
            print(f"`kedro run` CLI wall {cli['wall_s']:.2f}s (ratio to the timed worker {cli['wall_s'] / total:.2f})")
        slowest = sorted(((s, n) for r in ok for n, s in r["node_s"].items()), reverse=True)[:5]
        print("slowest nodes: " + ", ".join(f"{n} {s:.2f}s" for s, n in slowest))
        hooks = statistics.median(sum(v for k, v in r["hook_s"].items()) for r in ok)
        print(f"all hook calls (kedro-mlflow + project hooks): {hooks:.2f}s; plugins: {', '.join(ok[0]['plugins'])}")
        result.update(mlflow_detail_median_s=detail, phases_median_s=med, total_median_s=total, train_median_s=train,
                      overhead_over_train=overhead, phases_each=split)

    # ---- sweep
    if not has_sweep:
        print("\nsweep: src/sparsetrain/pipelines/sweep is absent: no sweep overhead measured")
        result["sweep"] = {"absent": True}
    elif sweep and not sweep.get("error"):
        trials = [t for t in sweep.get("trials", []) if t.get("train_seconds") is not None]
        node = sweep["node_s"].get("run_sweep")
        n = len(sweep.get("trials", [])) or n_trials
        train_s = [t["train_seconds"] for t in trials]
        per_trial = node / n if node else None
        mean_train = statistics.fmean(train_s) if train_s else None
        mean_run_wall = statistics.fmean(t["wall_s"] for t in trials) if trials else None
        print(f"\nsweep (`kedro run --pipelines sweep`, {n} trials on the default data; ratio = time / training alone)")
        print(f"{'':34} {'seconds':>8} {'ratio':>7}")
        rows = [("training alone (train_seconds)", mean_train),
                ("nested MLflow run of a trial", mean_run_wall),
                ("run_sweep node per trial", per_trial)]
        for label, value in rows:
            if value is not None:
                ratio = value / mean_train if mean_train else float("nan")
                print(f"{label:34} {value:8.2f} {ratio:7.2f}")
        if per_trial is not None and mean_train is not None:
            print(f"per-trial overhead: {per_trial - mean_train:.2f}s ({(per_trial - mean_train) / mean_train:.1f}x training)")
        print(f"whole sweep process {sweep['wall_s']:.1f}s (import {sweep['import_s']:.1f}s, "
              f"nodes {sum(sweep['node_s'].values()):.1f}s)")
        result["sweep"] = {
            "n_trials": n, "record": sweep, "train_seconds_mean": mean_train, "trial_run_wall_mean": mean_run_wall,
            "run_sweep_per_trial_s": per_trial,
            "overhead_per_trial_s": (per_trial - mean_train) if per_trial is not None and mean_train else None,
            "ratio_per_trial_over_train": (per_trial / mean_train) if per_trial and mean_train else None,
        }
    else:
        print(f"\nsweep: failed: {(sweep or {}).get('error', '')[:600]}")
        result["sweep"] = {"error": (sweep or {}).get("error")}

    result["machine"] = machine()
    result["wall_seconds"] = time.perf_counter() - wall_start
    print(f"\nwall time {result['wall_seconds']:.0f}s")
    out = Path(args.out) if args.out else RESULTS / ("pipeline_quick.json" if q else "pipeline.json")
    write_json(out, result, default=str)
    print(f"wrote {out}")
    shutil.rmtree(project, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
