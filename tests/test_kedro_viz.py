"""`kedro viz` draws the project's pipelines (kedro-viz, in the test and viz extras)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("kedro_viz")
pytestmark = pytest.mark.slow


def test_kedro_viz_builds_every_pipeline(project):
    result = subprocess.run([sys.executable, "-m", "kedro", "viz", "build"], cwd=project, capture_output=True,
                            text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-2000:]
    graph = json.loads((project / "build" / "api" / "main").read_text())
    assert {p["id"] for p in graph["pipelines"]} >= {"__default__", "sweep", "ingestion"}
    tasks = {n["name"] for n in graph["nodes"] if n["type"] == "task"}
    assert {"load_source", "train_model", "report_run", "register_model"} <= tasks
    datasets = {n["name"] for n in graph["nodes"] if n["type"] == "data"}
    assert "config:training" in datasets  # the typed sections the hook hands the nodes
