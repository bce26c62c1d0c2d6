"""notebooks/compare_runs.ipynb runs top to bottom against a small real MLflow store."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from mlflow import MlflowClient
from nbclient import NotebookClient

pytestmark = pytest.mark.slow
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "compare_runs.ipynb"

# (penalty, strength, init, val_accuracy, density): three of these are Pareto-optimal
TRIALS = [
    ("l1", 1e-3, "xavier_uniform", 0.95, 0.60),
    ("l1", 1e-2, "kaiming_uniform", 0.93, 0.30),
    ("l0", 1e-3, "xavier_uniform", 0.90, 0.10),
    ("l2", 1e-4, "kaiming_uniform", 0.94, 1.00),
    ("group_lasso", 1e-2, "xavier_uniform", 0.85, 0.40),
]
PARETO = {
    "linear-l1-1e-03-xavier_uniform",
    "linear-l1-1e-02-kaiming_uniform",
    "linear-l0-1e-03-xavier_uniform",
}


def make_store(uri: str, study: str) -> str:
    """A sweep as the pipeline records it: a parent run, finished trials, one failed trial."""
    client = MlflowClient(uri)
    experiment = client.create_experiment("sparsetrain")
    parent = client.create_run(
        experiment, run_name="sweep", tags={"sweep_role": "parent", "sweep_study": study}
    )
    for number, (penalty, strength, init, accuracy, density) in enumerate(TRIALS):
        run = client.create_run(
            experiment,
            run_name=f"linear-{penalty}-{strength:.0e}-{init}",
            tags={
                "mlflow.parentRunId": parent.info.run_id,
                "sweep_role": "trial",
                "sweep_study": study,
                "sweep_trial": str(number),
            },
        )
        for key, value in {
            "sparsity.penalty": penalty,
            "sparsity.strength": strength,
            "model.init": init,
        }.items():
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "val_accuracy", accuracy)
        client.log_metric(run.info.run_id, "density", density)
        client.set_terminated(run.info.run_id)
    failed = client.create_run(
        experiment,
        run_name="linear-l1-1e+00-xavier_uniform",
        tags={
            "mlflow.parentRunId": parent.info.run_id,
            "sweep_role": "trial",
            "sweep_study": study,
            "sweep_trial": str(len(TRIALS)),
            "sweep_fail_reason": "DivergedError: loss nan",
        },
    )
    client.set_terminated(failed.info.run_id, "FAILED")
    client.set_terminated(parent.info.run_id)
    return parent.info.run_id


def test_notebook_draws_the_frontier_of_the_latest_sweep(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    make_store(uri, "nb-study")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("SWEEP_STUDY", "SWEEP_PARENT_RUN_ID", "SWEEP_OBJECTIVE"):
        monkeypatch.delenv(name, raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert any("image/png" in out.get("data", {}) for out in outputs), "the frontier is drawn"
    text = "\n".join(out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in outputs)
    assert "6 trial runs" in text and "Pareto set: 3 of 5 completed trials" in text
    last = notebook.cells[-1].outputs[-1]["data"]["text/plain"]
    assert all(name in last for name in PARETO) and "group_lasso" not in last
