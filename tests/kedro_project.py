"""A scratch copy of the project for end-to-end tests, and ways to run `kedro run` in it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[1]


def copy_project(folder: Path) -> Path:
    """The project's conf, pyproject and src in ``folder``, with empty data layers (also used by
    benchmarks/sweep_workers.py)."""
    shutil.copytree(ROOT / "conf", folder / "conf", ignore=shutil.ignore_patterns("local"))
    (folder / "conf" / "local").mkdir()
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    # kedro wants the source folder inside the project root
    shutil.copytree(ROOT / "src", folder / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for layer in ("01_raw", "02_intermediate", "04_feature", "06_models", "07_model_output", "08_reporting"):
        (folder / "data" / layer).mkdir(parents=True)
    return folder


def make_project(tmp_path: Path, monkeypatch) -> Path:
    """A scratch project (conf + pyproject + empty data layers) with its own MLflow store."""
    copy_project(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    return tmp_path



def kedro_run(
    project: Path, params: str | None = None, timeout: int = 600, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """`kedro run [--params ...] [args]` in ``project``, as a user types it."""
    cmd = [sys.executable, "-m", "kedro", "run", *(["--params", params] if params else []), *args]
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def start_run(project: Path, params: str | None = None, args: tuple[str, ...] = ()) -> subprocess.Popen:
    """`kedro run` in the background, its output (stdout and stderr) line by line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "kedro", "run", *(["--params", params] if params else []), *args]
    return subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_at(project: Path, params: str | None, marker: str, args: tuple[str, ...] = ()) -> str:
    """Start a run, SIGKILL it as soon as ``marker`` appears in its output; returns the output."""
    proc = start_run(project, params, args)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before '{marker}': {''.join(seen)[-1500:]}"
    return "".join(seen)


def run_in_process(params: dict) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(Path.cwd())
    with KedroSession.create(project_path=Path.cwd(), runtime_params=params) as session:
        session.run()
