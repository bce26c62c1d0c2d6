"""Scheduled retraining (README "Schedules"), each way run for real in a scratch project: the
Airflow DAG that `kedro airflow create` makes from deploy/airflow_dag.j2 (loaded by Airflow's
DagBag, run by `dag.test()`), and README's crontab line (run by `sh -c`, under a real flock)."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from kedro_project import ROOT

pytestmark = pytest.mark.slow

PIPELINE = "retrain"  # "__default__" runs the same way (the DAG and the crontab line take any pipeline)
TEMPLATE = ROOT / "deploy" / "airflow_dag.j2"
PROJECT_PLACEHOLDER = "/path/to/sparsetrain"  # the project folder in README's crontab
DEFAULT_SCHEDULE = "0 3 * * *"

needs_airflow = pytest.mark.skipif(
    importlib.util.find_spec("airflow") is None or importlib.util.find_spec("kedro_airflow") is None,
    reason="apache-airflow / kedro-airflow are not installed (pip install -e '.[airflow]')",
)

# Loads the DAG folder with Airflow's DagBag, writes what it found as JSON, and with "test" runs
# the one DAG the way `airflow dags test` does (a real DAG run and task run, no scheduler).
DAGBAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag

folder, out, action = sys.argv[1:]
bag = DagBag(dag_folder=folder)
found = {"errors": bag.import_errors, "dags": {}}
for dag_id, dag in bag.dags.items():
    found["dags"][dag_id] = {
        "schedule": dag.schedule, "cron": dag.timetable.expression, "max_active_runs": dag.max_active_runs,
        "tasks": {t.task_id: {"nodes": t.op_kwargs["node_names"], "upstream": sorted(t.upstream_task_ids)}
                  for t in dag.tasks},
    }
if action == "test":
    (dag,) = bag.dags.values()
    found["state"] = str(dag.test().state)
with open(out, "w") as f:
    json.dump(found, f)
"""


def _edit_yaml(path: Path, section: str, **values) -> None:
    """Set keys of a parameters file's section (the scratch copy's file; comments are not kept)."""
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    data = data or {}
    data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _configured_schedule(project: Path) -> str:
    """`retrain.schedule` as a project's conf/base sets it (or its default)."""
    path = project / "conf" / "base" / "parameters_retrain.yml"
    params = yaml.safe_load(path.read_text()) if path.exists() else None
    return ((params or {}).get("retrain") or {}).get("schedule", DEFAULT_SCHEDULE)


def _fast(project: Path) -> None:
    _edit_yaml(project / "conf" / "base" / "parameters_training.yml", "training", epochs=2)


def _pipeline_nodes() -> list:
    from sparsetrain.pipeline_registry import register_pipelines

    return register_pipelines()[PIPELINE].nodes


def _finished_runs() -> list:
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [run for run in runs if run.info.status == "FINISHED"]


# --- Airflow ----------------------------------------------------------------------------------


@pytest.fixture
def airflow_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("airflow_home")


def _airflow_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    # no MLFLOW_TRACKING_URI: the task runs in the project folder, so the default
    # sqlite:///mlflow.db is the scratch project's store
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}")
    return env


def _create_dag(project: Path, home: Path, *params: str) -> None:
    """README's deploy command, with the scratch project and Airflow home."""
    cmd = [sys.executable, "-m", "kedro", "airflow", "create", "--pipelines", PIPELINE,
           "--jinja-file", str(TEMPLATE), "--target-dir", str(home / "dags"),
           "--params", ",".join([f"project_path={project}", *params])]
    result = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _dagbag(home: Path, action: str = "load") -> dict:
    """What Airflow finds in the DAG folder, read from another working directory than the project."""
    out = home / "dagbag.json"
    result = subprocess.run([sys.executable, "-c", DAGBAG, str(home / "dags"), str(out), action], cwd=home,
                            capture_output=True, text=True, timeout=300, env=_airflow_env(home))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text())


@needs_airflow
def test_airflow_dag_is_one_kedro_run_on_the_parameters_schedule(project, airflow_home):
    _fast(project)
    _create_dag(project, airflow_home)
    found = _dagbag(airflow_home)
    assert found["errors"] == {}
    dag_id = f"sparsetrain-{PIPELINE.strip('_')}"
    assert list(found["dags"]) == [dag_id]
    dag = found["dags"][dag_id]
    assert dag["schedule"] == dag["cron"] == _configured_schedule(project) == DEFAULT_SCHEDULE
    assert dag["max_active_runs"] == 1

    # One task runs every node of the pipeline, each after the nodes whose outputs it takes.
    (task,) = dag["tasks"].values()
    nodes = {node.name: node for node in _pipeline_nodes()}
    assert sorted(task["nodes"]) == sorted(nodes) and task["upstream"] == []
    made = {output for node in nodes.values() for output in node.outputs}
    ready: set[str] = set()
    for name in task["nodes"]:
        assert {i for i in nodes[name].inputs if i in made} <= ready, f"{name} runs before its inputs exist"
        ready |= set(nodes[name].outputs)

    # The schedule follows the parameter at the next parse, without generating the DAG again;
    # a DAG run is one kedro run: one MLflow run, in the project's store.
    _edit_yaml(project / "conf" / "base" / "parameters_retrain.yml", "retrain", schedule="30 4 * * 1")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], cwd=airflow_home, capture_output=True,
                   timeout=300, env=_airflow_env(airflow_home), check=True)
    found = _dagbag(airflow_home, "test")
    assert found["dags"][dag_id]["schedule"] == "30 4 * * 1"
    assert found["state"] == "success"
    (run,) = _finished_runs()
    assert PIPELINE in run.data.tags["pipeline_names"]


@needs_airflow
def test_airflow_dag_takes_its_schedule_from_the_parameter_only(project, airflow_home):
    _create_dag(project, airflow_home, "schedule=0 * * * *")  # a second source is refused
    (error,) = _dagbag(airflow_home)["errors"].values()
    assert "remove 'schedule'" in error

    _create_dag(project, airflow_home)
    _edit_yaml(project / "conf" / "base" / "parameters_retrain.yml", "retrain", schedule="daily at 3")
    (error,) = _dagbag(airflow_home)["errors"].values()
    assert "retrain.schedule" in error


# --- cron -------------------------------------------------------------------------------------

CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # minute hour day-of-month month day-of-week


def valid_cron(expression: str) -> bool:
    """Five numeric cron fields: `*`, numbers, ranges, lists and steps within each field's range."""
    fields = expression.split()
    if len(fields) != 5:
        return False
    for field, (low, high) in zip(fields, CRON_RANGES):
        for part in field.split(","):
            match = re.fullmatch(r"(?:\*|(\d+)(?:-(\d+))?)(?:/([1-9]\d*))?", part)
            if match is None:
                return False
            first, last = (int(x) if x else None for x in match.group(1, 2))
            if first is not None and not low <= first <= (last if last is not None else first) <= high:
                return False
    return True


def test_valid_cron():
    assert all(map(valid_cron, ["0 3 * * *", "*/15 0-6,22 1 1-12/2 7", "30 4 * * 1"]))
    assert not any(map(valid_cron, ["0 3 * *", "60 3 * * *", "0 24 * * *", "0 3 0 * *", "5-1 * * * *",
                                    "*/0 * * * *", "@daily extra", "0 3 * * * *"]))


def readme_crontab() -> tuple[dict[str, str], str, str]:
    """README's crontab block: its variable lines, the one entry's schedule and its command."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- crontab -->\s*```\w*\n(.*?)```\s*<!-- /crontab -->", readme, re.DOTALL)
    assert block, "README.md: no crontab block between <!-- crontab --> and <!-- /crontab -->"
    variables, entries = {}, []
    for line in block[1].splitlines():
        if re.match(r"[A-Za-z_]\w*=", line):
            name, _, value = line.partition("=")
            variables[name] = value
        elif line.strip() and not line.lstrip().startswith("#"):
            entries.append(line)
    (entry,) = entries
    fields = entry.split(None, 5)
    return variables, " ".join(fields[:5]), fields[5]


def test_readme_crontab_runs_once_at_a_time(project, tmp_path_factory):
    variables, schedule, command = readme_crontab()
    assert valid_cron(schedule), schedule
    assert schedule == _configured_schedule(ROOT)  # by default cron and Airflow retrain at the same time
    assert "%" not in command  # cron would cut the command there
    lock = re.search(r"flock -n (?:-E \d+ )?(\S+)", command)[1]
    log = re.search(r">> (\S+) 2>&1", command)[1]

    _fast(project)
    (project / ".venv").symlink_to(sys.prefix)  # the project's environment, where README puts it
    command = command.replace(PROJECT_PLACEHOLDER, str(project))
    if PIPELINE != "retrain":
        command = command.replace("--pipelines retrain", f"--pipelines {PIPELINE}")
    # what cron gives a command: /bin/sh, a bare PATH, $HOME, the crontab's variables
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"], "SHELL": "/bin/sh",
           "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1",
           **{name: value.replace(PROJECT_PLACEHOLDER, str(project)) for name, value in variables.items()}}
    assert env.get("MLFLOW_TRACKING_URI") == f"sqlite:///{project / 'mlflow.db'}" == mlflow.get_tracking_uri()
    cron_cwd = tmp_path_factory.mktemp("home")

    def cron() -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", command], cwd=cron_cwd, env=env, capture_output=True, text=True,
                              timeout=600)

    first = cron()
    assert first.returncode == 0, first.stdout + first.stderr
    output = (project / log).read_text()
    n = len(_pipeline_nodes())
    assert "Pipeline execution completed successfully" in output and f"[{n}/{n}]" in output, output[-3000:]
    assert len(_finished_runs()) == 1

    # While a run holds the lock, the next one does not start: it says so in the log and exits.
    with open(project / lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        start = time.monotonic()
        second = cron()
        elapsed = time.monotonic() - start
    assert second.returncode == 0 and elapsed < 5, (elapsed, second.stdout + second.stderr)
    added = (project / log).read_text()[len(output):]
    assert "skipped" in added and "Pipeline execution" not in added, added
    assert len(_finished_runs()) == 1
