"""The MLflow conventions of sparsetrain: run names, run identity, what a run logs, registration.

kedro-mlflow opens one MLflow run per `kedro run` and closes it; this module decides what goes
into it, so that every run is a transaction:

- the run is tagged with the process that owns it (host, pid, process start time), so that the
  next run can mark a run whose process died ``KILLED`` (:func:`close_orphans`);
- a run's files live in its own folder, ``data/08_reporting/runs/<run_id>/``, and only that
  folder is logged: two runs in one project folder never log each other's files;
- a model version is created only after its run has logged everything and is ``FINISHED``;
  the version's tags are created with it, and alias moves come last (:func:`register`). A kill
  at any point leaves either no version, or a version whose run is complete.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunStatus, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from sparsetrain.config import RegistryConfig, SparsetrainConfig
from sparsetrain.core.metrics import primary_metric
from sparsetrain.locks import ModelLock
from sparsetrain.scoring import degenerate_reason

logger = logging.getLogger(__name__)

HOST_TAG, PID_TAG, PROCESS_START_TAG = "sparsetrain.host", "sparsetrain.pid", "sparsetrain.process_start"
CHAMPION, CHALLENGER, PREVIOUS_CHAMPION = "champion", "challenger", "previous_champion"
RUNS_FOLDER = Path("data/08_reporting/runs")
RUN_CONFIG = "run_config.json"  # the full configuration a registered model was trained with


# --------------------------------------------------------------------------------------------
# names


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"


def run_name(cfg: SparsetrainConfig) -> str:
    """What ran, at a glance in the MLflow UI: ``mlp-gmp-10%-kaiming_uniform``,
    ``linear-l1-1e-03-kaiming_uniform``, ``mlp-l0-1e-03-gmp-2%-xavier_uniform``,
    ``mlp-rigl-2%-kaiming_uniform``, ``mlp-nm2:4-kaiming_uniform``."""
    sparsity = cfg.sparsity
    parts = [cfg.model.kind]
    if sparsity.penalty != "none":
        parts += [sparsity.penalty, f"{sparsity.strength:.0e}"]
    if sparsity.pruning in ("gmp", "structured", "set", "rigl"):
        parts += [sparsity.pruning, _percent(sparsity.target_density)]
    elif sparsity.pruning == "nm":
        parts.append(f"nm{sparsity.n}:{sparsity.m}")
    elif sparsity.pruning == "threshold":
        parts += ["threshold", f"{sparsity.threshold:.0e}"]
    if len(parts) == 1:
        parts.append("dense")
    parts.append(cfg.model.init)
    return "-".join(parts)


# --------------------------------------------------------------------------------------------
# run identity and orphans


def _process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), or "" where /proc is absent:
    with the pid it identifies a process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PROCESS_START_TAG: _process_start(pid)}


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or _process_start(pid) in ("", start)


def close_orphans(client: MlflowClient, experiment_id: str, own_run_id: str | None = None) -> list[str]:
    """Mark ``KILLED`` every RUNNING run of this host whose process is gone, and the runs nested
    under it; returns their ids. Runs of other hosts are left alone (their pid means nothing here)."""
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000
    )
    dead = {
        run.info.run_id
        for run in running
        if run.info.run_id != own_run_id
        and run.data.tags.get(HOST_TAG) == host
        and run.data.tags.get(PID_TAG, "").isdigit()
        and not _alive(int(run.data.tags[PID_TAG]), run.data.tags.get(PROCESS_START_TAG, ""))
    }
    dead |= {run.info.run_id for run in running if run.data.tags.get("mlflow.parentRunId") in dead}
    for run_id in sorted(dead):
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        logger.warning("Run %s was left RUNNING by a process that died; marked it KILLED", run_id)
    return sorted(dead)


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None = None) -> None:
    """Create the experiment ``name`` unless it exists. Workers that start together on a new
    shared store all find it missing and all create it: the store refuses all but one
    (RESOURCE_ALREADY_EXISTS), which is the outcome they wanted."""
    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is not None:
        return
    try:
        client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def start_run_record(cfg: SparsetrainConfig | None, name: str | None, omit: Sequence[str] = ()) -> None:
    """At the start of the active run: close orphans, tag this run with its process, then name it
    and log ``cfg`` as its parameters. A retrain passes None for both: its node logs the
    challenger's configuration, known only once the champion is read; ``omit`` leaves out keys
    that the pipeline chooses itself (a path's ``sparsity.strength``)."""
    run = mlflow.active_run()
    client = MlflowClient()
    close_orphans(client, run.info.experiment_id, own_run_id=run.info.run_id)
    mlflow.set_tags({**process_tags(), **({"mlflow.runName": name} if name else {})})
    if cfg is not None:
        log_params({key: value for key, value in cfg.flat().items() if key not in omit})


def log_params(flat: Mapping[str, Any]) -> None:
    """Dotted parameters to the active run; lists as JSON (``model.hidden`` = ``[300, 100]``)."""
    encode = lambda value: json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)  # noqa: E731
    mlflow.log_params({key: encode(value) for key, value in flat.items()})


# --------------------------------------------------------------------------------------------
# what a run logs


def run_folder(run_id: str) -> Path:
    """This run's own folder for the files a user keeps (reports, export); never shared."""
    folder = RUNS_FOLDER / run_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: start the pipeline with `kedro run`")
    return run.info.run_id


def log_metrics(
    run_id: str, scalars: Mapping[str, float], histories: Mapping[str, Sequence[float]] = {}
) -> None:
    """Scalars at step 0 and per-epoch curves (one step an epoch), in one batched call."""
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, 0) for key, value in scalars.items()]
    metrics += [
        Metric(key, float(v), now, step) for key, values in histories.items() for step, v in enumerate(values)
    ]
    client = MlflowClient()
    for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def training_curves(
    scalars: Mapping[str, float], history: Any
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The scalars and the per-epoch curves to log for a trained model: ``train_loss``,
    ``val_loss``, and ``density`` as a history (one step an epoch) ending with the final model's
    density, so that the metric's latest value is the model's and its curve shows when the
    sparsity came (from the first step for set / rigl, gradually for gmp)."""
    curves = {"train_loss": list(history.train_loss), "val_loss": list(history.val_loss)}
    scalars = dict(scalars)
    if history.density and "density" in scalars:
        curves["density"] = [*history.density, scalars.pop("density")]
    return scalars, {name: values for name, values in curves.items() if values}


def log_evaluation(run_id: str, scalars: Mapping[str, float], history: Any, task: str) -> dict[str, Any]:
    """A run's evaluation as MLflow records it: the scalar metrics, the per-epoch curves of
    ``history`` (a core ``History``) as metric histories, ``density`` and the test metric as run
    tags, and ``metrics.json`` in the run's folder (the caller logs the folder's files). Returns
    the run report that :func:`publish_model` takes."""
    log_metrics(run_id, *training_curves(scalars, history))
    metric = primary_metric(task)
    set_run_tags(run_id, {"density": f"{scalars['density']:.6f}", metric: f"{scalars[metric]:.6f}"})
    folder = run_folder(run_id)
    (folder / "metrics.json").write_text(json.dumps(dict(scalars), indent=2, sort_keys=True))
    return {"run_id": run_id, "folder": str(folder), "metrics": dict(scalars)}


def set_run_tags(run_id: str, tags: Mapping[str, str]) -> None:
    MlflowClient().log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])


def log_folder(run_id: str, folder: Path, artifact_path: str | None = None) -> None:
    MlflowClient().log_artifacts(run_id, str(folder), artifact_path=artifact_path)


def log_nested_run(
    parent_run_id: str,
    name: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str] = {},
    params: Mapping[str, Any] = {},
    histories: Mapping[str, Sequence[float]] = {},
) -> str:
    """A FINISHED run nested under ``parent_run_id`` (tag ``mlflow.parentRunId``, same
    experiment) holding ``params`` (dotted, as :func:`log_params` encodes them), ``metrics``
    (non-finite values left out), per-epoch ``histories`` and ``tags``; returns its id. Made with
    the client, so the active run stays the parent's; it carries the process tags, so that if the
    process dies before it is closed, the next run marks it KILLED with its parent
    (:func:`close_orphans`)."""
    client = MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run_tags = {"mlflow.parentRunId": parent_run_id, **process_tags(), **{k: str(v) for k, v in tags.items()}}
    run_id = client.create_run(experiment_id, run_name=name, tags=run_tags).info.run_id
    if params:
        from mlflow.entities import Param

        encode = lambda value: json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)  # noqa: E731
        entries = [Param(key, encode(value)) for key, value in params.items()]
        for start in range(0, len(entries), 100):  # MLflow's limit of params per batch
            client.log_batch(run_id, params=entries[start : start + 100])
    log_metrics(run_id, {k: v for k, v in metrics.items() if math.isfinite(v)}, histories)
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return run_id


def child_runs(parent_run_id: str) -> list[Run]:
    """The FINISHED runs nested under ``parent_run_id``."""
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'FINISHED'",
        max_results=50000,
    )


def latest_run_tagged(key: str, value: str, exclude: str | None = None) -> Run | None:
    """The most recent FINISHED run of the active experiment with tag ``key = value``."""
    client = MlflowClient()
    experiment = mlflow.active_run().info.experiment_id
    found = client.search_runs(
        [experiment], filter_string=f"tags.{key} = '{value}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=10,
    )
    found = [run for run in found if run.info.run_id != exclude]
    return found[0] if found else None


# --------------------------------------------------------------------------------------------
# registration


def register(
    run_id: str,
    name: str,
    model_uri: str,
    version_tags: Mapping[str, str],
    move_aliases: bool = True,
) -> str:
    """Close the run as FINISHED, then create the version with its tags, then (``move_aliases``)
    move the aliases: ``challenger``, and ``champion`` when the name has none. Call only when the
    run has logged everything: a kill after any step leaves no version whose run is incomplete.
    A retrain moves the aliases itself, by its decision (:func:`move_aliases`)."""
    client = MlflowClient()
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    version = str(mlflow.register_model(model_uri, name, tags=dict(version_tags)).version)
    if move_aliases:
        client.set_registered_model_alias(name, CHALLENGER, version)
        if CHAMPION not in client.get_registered_model(name).aliases:
            client.set_registered_model_alias(name, CHAMPION, version)
    return version


def alias_version(name: str, alias: str, client: MlflowClient | None = None) -> ModelVersion | None:
    """The version behind ``name@alias``, or None (no such model, or no such alias)."""
    client = client or MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def move_aliases(name: str, version: str, run_id: str, promote: bool, required: Sequence[str]) -> None:
    """The last step of a retrain: ``challenger`` to ``version``; when ``promote``, the champion
    to ``previous_champion`` and ``version`` to ``champion``, in that order, so that a kill at any
    moment leaves ``champion`` on a complete version. Refuses (champion unmoved) unless the run
    is FINISHED with every ``required`` metric, read back from the store."""
    client = MlflowClient()
    run = client.get_run(run_id)
    missing = [k for k in required if k not in run.data.metrics]
    if run.info.status != "FINISHED" or missing:
        raise RuntimeError(
            f"run {run_id} is {run.info.status} with metrics {missing} missing: the aliases of '{name}' "
            "were not moved"
        )
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promote:
        champion = alias_version(name, CHAMPION, client)
        if champion is not None and str(champion.version) != str(version):
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, str(champion.version))
        client.set_registered_model_alias(name, CHAMPION, version)


def versions_tagged(name: str, tags: Mapping[str, str]) -> list[ModelVersion]:
    """The versions of ``name`` that carry every one of ``tags``, oldest first."""
    found = MlflowClient().search_model_versions(f"name = '{name}'", max_results=10000)
    match = [v for v in found if all(v.tags.get(k) == str(value) for k, value in tags.items())]
    return sorted(match, key=lambda v: int(v.version))


def registration_lock(name: str) -> ModelLock:
    """Held around a check-then-register (a sweep's best, once per study and trial), so that two
    workers on this host never both register; waits, since the critical section is short."""
    return ModelLock("register", mlflow.get_tracking_uri(), name, label="registration").acquire(wait_s=3600)


def set_version_tags(name: str, version: str, tags: Mapping[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def restore_previous_champion(name: str, previous: str) -> None:
    """The last step of a rollback: ``champion`` back to version ``previous``, then
    ``previous_champion`` cleared, so that a second rollback has nothing to undo."""
    client = MlflowClient()
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)


def log_run_config(run_id: str, cfg: SparsetrainConfig) -> None:
    """The full configuration of the run's model, as ``run_config.json``: what a retrain reads to
    train a challenger with the champion's own recipe (parameters are strings in MLflow)."""
    path = run_folder(run_id) / RUN_CONFIG
    path.write_text(json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True))
    MlflowClient().log_artifact(run_id, str(path))


def run_config_of(run_id: str) -> dict[str, Any] | None:
    """The ``run_config.json`` of a run, or None when it has none (registered before it existed)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=RUN_CONFIG, dst_path=folder
            )
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())


def publish_model(
    run_report: Mapping[str, Any],
    predictor: Any,
    input_example: Any,
    task: str,
    registry: RegistryConfig,
    extra_tags: Mapping[str, str] = {},
    config: SparsetrainConfig | None = None,
    move_aliases: bool = True,
) -> dict[str, Any]:
    """The last step of a run: export the sparse weights, log the served model (signature and
    input example) and the run's ``config`` (:func:`log_run_config`), and register it
    (:func:`register`), unless the model is degenerate (density 0, chance accuracy) and
    ``registry.allow_degenerate`` is off: then the run stays, unregistered, with the reason as
    its ``registration`` tag."""
    from sparsetrain.core.export import save_sparse
    from sparsetrain.serving import log_served_model

    run_id, metrics = run_report["run_id"], run_report["metrics"]
    name = registry.name_for(task)
    reason = degenerate_reason(metrics, task)
    if reason is not None and not registry.allow_degenerate:
        logger.warning(
            "Not registered as '%s': %s (registry.allow_degenerate=true registers it anyway)", name, reason
        )
        set_run_tags(run_id, {"registration": f"refused: {reason}"})
        return {"registered": False, "name": name, "run_id": run_id, "reason": reason}
    export = Path(run_report["folder"]) / "sparse_export" / "model.sparse.safetensors"
    export.parent.mkdir(exist_ok=True)
    save_sparse(predictor.network, export, quantize=config.export.quantize if config else "none")
    MlflowClient().log_artifact(run_id, str(export), artifact_path="sparse_export")
    logger.info("Logging the served model (pyfunc, signature, input example) to run %s", run_id)
    model_uri = log_served_model(predictor, input_example, export)
    if config is not None:
        log_run_config(run_id, config)
    metric = primary_metric(task)
    version_tags = {
        "density": f"{metrics['density']:.6f}",
        metric: f"{metrics[metric]:.6f}",
        "run_id": run_id,
        **extra_tags,
    }
    set_run_tags(run_id, {"registration": "registered", "registered_model": name})
    version = register(run_id, name, model_uri, version_tags, move_aliases=move_aliases)
    return {"registered": True, "name": name, "version": version, "run_id": run_id, **version_tags}
