"""The sweep nodes in process: real digits, real Optuna storage, real MLflow SQLite store."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from mlflow import MlflowClient

from sparsetrain.config import CompressionConfig, SweepConfig, parse_config, parse_sweep_section, unflatten
from sparsetrain.config.space import pareto_mask, run_name
from sparsetrain.errors import SparsetrainError
from sparsetrain.pipelines.sweep import create_pipeline
from sparsetrain.pipelines.sweep import study as studies
from sparsetrain.pipelines.sweep import trial as trials
from sparsetrain.pipelines.sweep.nodes import register_sweep_best, report_sweep, run_sweep
from sparsetrain.pipelines.sweep.report import (
    best_params,
    best_trial_metrics,
    choose,
    pareto_set,
    plot_frontier,
)
from sparsetrain.pipelines.sweep.trial import close_killed_runs, refit_best
from sparsetrain.recipe import compress_splits
from sparsetrain.scoring import evaluate_network
from sparsetrain.tracking import HOST_TAG, PID_TAG, PROCESS_START_TAG

BASE = {
    "data": {},
    "compression": {"method": "none"},
    "model": {"kind": "linear"},
    "sparsity": {},
    "training": {"epochs": 2, "early_stopping": None, "verbose": False},
}
PENALTY_X_INIT = {"sparsity.penalty": ["l1", "l0"], "model.init": ["xavier_uniform", "kaiming_uniform"]}


def base_config(training=None, **sections):
    """The typed `config:run` the project hook hands the nodes."""
    return parse_config({**BASE, "training": {**BASE["training"], **(training or {})}, **sections})


def sweep_config(tmp_path, **cfg) -> SweepConfig:
    """The typed `config:sweep` the project hook hands the nodes."""
    return parse_sweep_section(
        {
            "study_name": "test",
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "heartbeat_s": 1,
            "sampler": "random",
            "space": PENALTY_X_INIT,
            **cfg,
        }
    )


def sweep(tmp_path, splits, dataset_info, training=None, model_input=None, sections=None, **cfg):
    base = base_config(training, **(sections or {}))
    return run_sweep(model_input or splits, splits, dataset_info, base, sweep_config(tmp_path, **cfg))


def nested_runs(parent) -> list:
    return MlflowClient().search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )


def test_trials_are_nested_runs_scored_on_validation(tmp_path, splits, dataset_info, tracking):
    table, summary = sweep(tmp_path, splits, dataset_info, n_trials=3)

    assert list(table["state"]) == ["COMPLETE"] * 3
    runs = nested_runs(tracking)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        flat = parse_config(BASE).flat()
        assert set(flat) <= set(run.data.params), "every flattened parameter is logged"
        assert {"val_accuracy", "val_f1_macro", "density", "nonzero_params", "total_params"} <= set(
            run.data.metrics
        )
        assert not [m for m in run.data.metrics if m.startswith("test_")], "trials never see the test split"
        assert len(MlflowClient().get_metric_history(run.info.run_id, "train_loss")) == 2
        assert (
            run.info.run_name
            == f"linear-{run.data.params['sparsity.penalty']}-1e-03-{run.data.params['model.init']}"
        )
        assert run.data.tags["sweep_study"] == "test"
        # the process tags: if this worker dies, the next run closes its trial runs as orphans
        assert run.data.tags[PID_TAG] == str(os.getpid()) and run.data.tags[HOST_TAG]
        assert PROCESS_START_TAG in run.data.tags
    # the table, the summary and MLflow agree
    by_id = {r.info.run_id: r for r in runs}
    for row in table.itertuples():
        assert by_id[row.mlflow_run_id].data.metrics["val_accuracy"] == pytest.approx(row.val_accuracy)
    assert summary["best"]["number"] == int(table.loc[table["val_accuracy"].idxmax(), "number"])
    assert table["best"].sum() == 1 and table["pareto"].any()
    assert MlflowClient().get_run(tracking.info.run_id).data.tags["sweep_role"] == "parent"

    # the reports of the parent run
    assert plot_frontier(table, summary).axes[0].get_xlabel().startswith("density")
    metrics = best_trial_metrics(summary)
    assert metrics["best_val_accuracy"] == pytest.approx(table["val_accuracy"].max())
    assert metrics["sweep_n_complete"] == 3
    run_params = best_params(summary)["run"]["params"]
    # `kedro run --config best_params.yml` deep-merges these sections over the run's parameters
    merged = parse_config({k: {**BASE[k], **run_params.get(k, {})} for k in BASE}).flat()
    assert merged == {**summary["best"]["config"], "training.verbose": False}
    assert "verbose" not in run_params["training"], "the run keeps its own verbosity"
    assert pareto_set(summary)[0]["run"]["params"]["model"]["init"] in PENALTY_X_INIT["model.init"]

    # refit on train + validation, one evaluation on test
    reducer, _, _ = compress_splits(splits, CompressionConfig(method="none"), seed=0)
    network, _, refit, history = refit_best(summary, splits, splits, reducer, dataset_info, base_config())
    assert len(refit.X_train) == len(splits.X_train) + len(splits.X_val) and len(refit.X_val) == 0
    assert np.array_equal(refit.X_test, splits.X_test)
    assert history.epochs_run == summary["best"]["refit_epochs"] == 2
    final = evaluate_network(network, refit, dataset_info, history)
    assert "test_accuracy" in final and "val_accuracy" not in final


def test_failed_trials_are_recorded_and_the_sweep_goes_on(
    tmp_path, splits, dataset_info, tracking, monkeypatch
):
    real = trials.train_network

    def flaky(splits, info, model_cfg, sparsity_cfg, training_cfg):
        if training_cfg.lr == 0.5:
            raise RuntimeError("boom")
        return real(splits, info, model_cfg, sparsity_cfg, training_cfg)

    monkeypatch.setattr(trials, "train_network", flaky)
    # lr 1e38 with plain SGD overflows the weights: the loss is NaN, a real DivergedError
    table, summary = sweep(
        tmp_path,
        splits,
        dataset_info,
        sampler="grid",
        n_trials=10,
        space={"training.lr": [1.0e-2, 0.5, 1.0e38]},
        training={"optimizer": "sgd"},
    )

    assert len(table) == 3, "the grid stops once every point ran"
    reasons = dict(zip(table["training.lr"], table["fail_reason"]))
    assert reasons[1.0e38].startswith("DivergedError") and reasons[0.5] == "RuntimeError: boom"
    assert table.set_index("training.lr").loc[1.0e-2, "state"] == "COMPLETE"
    assert summary["best"]["params"] == {"training.lr": 1.0e-2}
    study = optuna.load_study(study_name="test", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL", "FAIL"]
    failed = [r for r in nested_runs(tracking) if r.info.status == "FAILED"]
    assert len(failed) == 2 and all(r.data.tags["sweep_fail_reason"] for r in failed)


def test_rerun_continues_the_study_with_fresh_draws(tmp_path, splits, dataset_info, tracking):
    space = {"sparsity.strength": {"low": 1.0e-5, "high": 1.0e-1, "log": True}}
    sweep(tmp_path, splits, dataset_info, n_trials=2, space=space)
    table, summary = sweep(tmp_path, splits, dataset_info, n_trials=2, space=space)

    assert list(table["number"]) == [0, 1, 2, 3] and summary["n_trials_this_run"] == 2
    assert table["sparsity.strength"].nunique() == 4, "a resumed run does not replay the first draws"
    # trial n's draw depends on (seed, n) only: the same study elsewhere samples the same points
    other = tmp_path / "other"
    other.mkdir()
    again, _ = sweep(other, splits, dataset_info, n_trials=2, space=space)
    assert list(again["sparsity.strength"]) == list(table["sparsity.strength"][:2])


def test_multi_objective_returns_the_pareto_set(tmp_path, splits, dataset_info, tracking):
    table, summary = sweep(
        tmp_path,
        splits,
        dataset_info,
        n_trials=4,
        multi_objective=True,
        space={"sparsity.penalty": ["l1"], "sparsity.strength": {"low": 1e-4, "high": 3e-1, "log": True}},
    )
    study = optuna.load_study(study_name="test", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    front = {r["number"] for r in summary["pareto"]}
    assert front == {t.number for t in study.best_trials}
    assert summary["best"]["number"] in front
    assert set(table.loc[table["pareto"], "number"]) == front


def test_max_density_excludes_dense_trials():
    cfg = SweepConfig(space={"sparsity.penalty": ["l1"]}, max_density=0.5)
    records = [
        {"number": 0, "state": "COMPLETE", "value": 0.99, "metrics": {"density": 0.9}},
        {"number": 1, "state": "COMPLETE", "value": 0.90, "metrics": {"density": 0.4}},
        {"number": 2, "state": "COMPLETE", "value": 0.80, "metrics": {"density": 0.1}},
        {"number": 3, "state": "FAIL", "value": None, "metrics": {}},
    ]
    best, pareto = choose(records, cfg)
    assert best["number"] == 1 and [r["number"] for r in pareto] == [2, 1]
    assert choose(records, cfg.model_copy(update={"max_density": 0.05})) == (None, [])
    assert pareto_mask([0.99, 0.9, 0.8], [0.9, 0.4, 0.1]) == [True, True, True]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_stale_running_trials_are_failed_and_their_runs_closed(tmp_path, tracking):
    """A killed worker leaves its trial RUNNING; once its heartbeat is 2 x heartbeat_s old, the next
    worker marks it FAIL and closes its MLflow runs as KILLED, on SQL and journal storages alike."""
    for storage in (f"sqlite:///{tmp_path / 'optuna.db'}", f"journal:{tmp_path / 'optuna.log'}"):
        cfg = SweepConfig(
            study_name="stale", storage=storage, heartbeat_s=1, space={"sparsity.penalty": ["l1"]}
        )
        study, backend = studies.open_study(cfg, on_stale=close_killed_runs)
        dead, alive = study.ask(), None
        run = MlflowClient().create_run(
            tracking.info.experiment_id, tags={"mlflow.parentRunId": tracking.info.run_id}
        )
        dead.set_user_attr("mlflow_run_id", run.info.run_id)
        if isinstance(backend, optuna.storages.RDBStorage):
            backend.record_heartbeat(dead._trial_id)
            time.sleep(3.2)  # SQLite's clock ticks in whole seconds; stale = over 2 s old
            alive = study.ask()
            backend.record_heartbeat(alive._trial_id)
        else:
            dead.set_user_attr(studies.HEARTBEAT_ATTR, time.time() - 10)
            alive = study.ask()
            alive.set_user_attr(studies.HEARTBEAT_ATTR, time.time())

        failed = studies.fail_stale_trials(study, backend, 2 * cfg.heartbeat_s, close_killed_runs)

        assert failed == [dead.number], storage
        states = {t.number: t.state.name for t in study.get_trials()}
        assert states == {dead.number: "FAIL", alive.number: "RUNNING"}
        closed = MlflowClient().get_run(run.info.run_id)
        assert closed.info.status == "KILLED" and "heartbeat" in closed.data.tags["sweep_fail_reason"]
        records = studies.trial_records(study)
        assert records[0]["fail_reason"] == studies.STALE_REASON
        study.tell(alive, 0.5)


def test_trial_runs_name_what_they_tried():
    flat = parse_config(
        unflatten(
            {
                "model.kind": "mlp",
                "sparsity.penalty": "l0",
                "sparsity.strength": 3e-4,
                "model.init": "kaiming_normal",
            }
        )
    ).flat()
    assert run_name(flat, ["sparsity.penalty", "model.init"]) == "mlp-l0-3e-04-kaiming_normal"


def test_a_trial_parses_its_config_once_and_refits_compression_it_sweeps(
    tmp_path, splits, dataset_info, tracking, monkeypatch
):
    """typed base + the trial's values -> one parse -> train; a trial that sweeps compression.*
    trains on its own reducer, the others on the pipeline's compressed splits."""
    parses = []
    real = trials.parse_config
    monkeypatch.setattr(trials, "parse_config", lambda tree: parses.append(tree) or real(tree))
    pca = CompressionConfig(method="pca", n_components=20)
    _, _, model_input = compress_splits(splits, pca, seed=42)
    table, summary = sweep(
        tmp_path,
        splits,
        dataset_info,
        model_input=model_input,
        sections={"compression": pca.model_dump()},
        sampler="grid",
        n_trials=5,
        space={"compression.n_components": [8, 20]},
    )

    assert list(table["state"]) == ["COMPLETE"] * 2 and len(parses) == 2, "one parse per trial"
    # linear on n inputs, 10 classes: 10 n weights + 10 biases
    totals = dict(zip(table["compression.n_components"], table["total_params"]))
    assert totals == {8: 90, 20: 210}
    assert {r["config"]["compression.n_components"] for r in summary["pareto"] + [summary["best"]]} <= {8, 20}


def parent_files(parent) -> Path:
    return Path("data/08_reporting/runs") / parent.info.run_id / "sweep"


def test_reports_are_the_parent_runs_own_and_registration_comes_last(
    tmp_path, splits, dataset_info, standardizer, digits, tracking
):
    base = base_config()
    table, summary = run_sweep(splits, splits, dataset_info, base, sweep_config(tmp_path, n_trials=2))
    written = report_sweep(table, summary)

    # the reports: in this run's own folder, logged from there under sweep/, nothing shared
    folder = parent_files(tracking)
    names = {"trials.csv", "summary.json", "frontier.png", "best_params.yml", "pareto_set.yml"}
    assert {p.name for p in folder.iterdir()} == names == set(written["files"])
    assert Path(written["folder"]).resolve() == folder.resolve()
    client = MlflowClient()
    assert {a.path for a in client.list_artifacts(tracking.info.run_id, "sweep")} == {f"sweep/{n}" for n in names}
    assert not Path("data/08_reporting/sweep").exists(), "no report in a folder other workers share"
    best = yaml.safe_load((folder / "best_params.yml").read_text())
    assert best == best_params(summary)
    parent = client.get_run(tracking.info.run_id)
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(table["val_accuracy"].max())
    assert parent.data.tags["sweep_best_trial"] == str(summary["best"]["number"])

    registered = register_sweep_best(
        summary, written, standardizer, digits, dataset_info, splits, splits, None, base
    )

    assert registered["registered"], registered
    version = client.get_model_version("sparsetrain-classifier", registered["version"])
    assert version.run_id == tracking.info.run_id
    assert version.tags["sweep_study"] == "test" and version.tags["sweep_trial"] == str(summary["best"]["number"])
    assert float(version.tags["sweep_val_accuracy"]) == pytest.approx(summary["best"]["value"], abs=1e-6)
    assert {"density", "test_accuracy", "run_id"} <= set(version.tags)
    parent = client.get_run(tracking.info.run_id)
    assert parent.info.status == "FINISHED"
    assert 0.0 < parent.data.metrics["test_accuracy"] <= 1.0 and "density" in parent.data.tags
    assert {"sparse_export/model.sparse.safetensors", "metrics.json"} <= {
        a.path for a in client.list_artifacts(tracking.info.run_id, "sparse_export")
    } | {a.path for a in client.list_artifacts(tracking.info.run_id)}
    # every metric of the run was logged before its version existed
    last_metric = max(
        m.timestamp for key in parent.data.metrics for m in client.get_metric_history(tracking.info.run_id, key)
    )
    assert last_metric <= version.creation_timestamp


def test_without_a_best_trial_the_reports_stay_and_nothing_is_registered(
    tmp_path, splits, dataset_info, standardizer, digits, tracking
):
    base = base_config()
    table, summary = run_sweep(
        splits, splits, dataset_info, base, sweep_config(tmp_path, n_trials=1, max_density=1e-9)
    )
    written = report_sweep(table, summary)
    assert summary["best"] is None and "best_params.yml" not in written["files"]
    assert (parent_files(tracking) / "trials.csv").exists()
    with pytest.raises(SparsetrainError, match="sweep.max_density"):
        register_sweep_best(summary, written, standardizer, digits, dataset_info, splits, splits, None, base)
    assert MlflowClient().search_model_versions("") == []


def test_registration_is_the_last_node_and_no_node_reads_params():
    pipeline = create_pipeline()
    last = pipeline.nodes[-1]
    assert last.name == "register_sweep_best"
    assert "sweep_report" in last.inputs, "it runs after the run's reports and metrics are logged"
    inputs = {name for n in pipeline.nodes for name in n.inputs}
    assert not [name for name in inputs if name.startswith("params:") or name == "parameters"]
    assert {"config:run", "config:sweep"} <= inputs
