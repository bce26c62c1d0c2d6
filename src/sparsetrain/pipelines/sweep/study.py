"""Optuna glue of the sweep: storage, sampler, suggestions, the optimize loop, dead workers, the
trial records.

Nothing here trains or tracks: :mod:`.trial` is the objective that trains a trial and logs it to
MLflow; :mod:`.report` turns the records into the study's report.

Dead workers. A trial whose worker is killed (SIGKILL, a lost machine) would stay RUNNING
forever. Every running trial beats a heartbeat every ``sweep.heartbeat_s`` seconds; a RUNNING
trial silent for twice that long is marked FAIL by the next worker that starts a trial (or
starts up), which then calls ``on_stale`` for it (the sweep closes the trial's MLflow runs as
KILLED). On SQL storages this is Optuna's own ``RDBStorage(heartbeat_interval=...,
heartbeat_stale_trial_callback=...)``; the journal storage has no heartbeat in Optuna, so the
same protocol runs here on a trial user attribute (:func:`fail_stale_trials`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from sparsetrain.config import SweepConfig
from sparsetrain.config.space import Choice, ParamSpec, Range, decode, encode, grid_space
from sparsetrain.errors import SparsetrainError

DEFAULT_STORAGE = "sqlite:///data/08_reporting/sweep/optuna.db"
HEARTBEAT_ATTR = "heartbeat"
STALE_REASON = "worker stopped: no heartbeat (killed or lost)"
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def storage_url(cfg: SweepConfig) -> str:
    return cfg.storage or DEFAULT_STORAGE


def safe_url(url: str) -> str:
    """The storage URL without its password, for messages, logs and tags."""
    if "://" not in url or url.startswith("journal:"):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def make_storage(url: str, heartbeat_s: int, on_stale: StaleCallback | None = None) -> BaseStorage:
    """The Optuna storage behind ``url``; a local SQLite or journal file gets its folder made."""
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Several local workers write to one file: wait for the lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(3):
            try:
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_s,
                    grace_period=2 * heartbeat_s,
                    heartbeat_stale_trial_callback=on_stale,
                )
            except Exception as error:  # two workers creating the tables at the same moment
                if attempt == 2 or not _creation_race(error):
                    raise SparsetrainError(
                        f"sweep.storage: cannot open '{safe_url(url)}': {error}"
                    ) from error
                time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def _creation_race(error: Exception) -> bool:
    """Another worker created Optuna's tables first: SQLite reports the table exists or the
    file locked; PostgreSQL a duplicate key (UniqueViolation) in its catalog, e.g. on pg_type
    for the enum types Optuna creates. Retried: the second attempt finds the tables made."""
    text = str(error)
    return any(sign in text for sign in ("already exists", "locked", "duplicate key"))


class TrialSeededSampler(BaseSampler):
    """Seeds the sampler of each trial from ``(seed, trial.number)``.

    Trial numbers are unique in a study, so resumed runs and parallel workers never replay each
    other's random draws (one sampler seeded once would start every worker and every resumed
    run on the same points), and a one-worker sweep repeats exactly. Samplers read the history
    from the storage, not from their own state, so a fresh one per trial loses nothing.
    """

    def __init__(self, factory: Callable[[int | None], BaseSampler], seed: int | None) -> None:
        self._factory = factory
        self._seed = seed
        self._inner = self._make(seed)

    def _make(self, seed: int | None) -> BaseSampler:
        with warnings.catch_warnings():  # TPE's constraints_func is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return self._factory(seed)

    def _reseed(self, number: int) -> None:
        if self._seed is None:
            self._inner = self._make(None)
            return
        # Mixed, not seed + number: nearby seeds start Mersenne Twister on correlated first draws.
        self._inner = self._make(int(np.random.SeedSequence([self._seed, number]).generate_state(1)[0]))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._reseed(trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def density_constraint(max_density: float) -> Callable[[FrozenTrial], tuple[float]]:
    """Optuna constraint (feasible when <= 0): density at most ``max_density``."""

    def constraint(trial: FrozenTrial) -> tuple[float]:
        return (float(trial.user_attrs.get("density", 1.0)) - max_density,)

    return constraint


def make_sampler(cfg: SweepConfig) -> BaseSampler:
    """``sweep.sampler`` over ``sweep.space``, seeded per trial; TPE learns the density limit."""
    space = cfg.search_space()
    constraints = density_constraint(cfg.max_density) if cfg.max_density is not None else None

    if cfg.sampler == "grid":
        # Not reseeded: the seed shuffles the grid, and every worker must agree on it. Trial n
        # takes grid point n, so workers never share a point while the grid lasts.
        return GridSampler(grid_space(space), seed=cfg.seed)

    def factory(seed: int | None) -> BaseSampler:
        if cfg.sampler == "random":
            return RandomSampler(seed=seed)
        return TPESampler(seed=seed, constraints_func=constraints)

    return TrialSeededSampler(factory, cfg.seed)


def open_study(cfg: SweepConfig, on_stale: StaleCallback | None = None) -> tuple[optuna.Study, BaseStorage]:
    """Create ``sweep.study_name`` in the storage, or load it to continue it."""
    directions = [cfg.direction] + (["minimize"] if cfg.multi_objective else [])
    storage = make_storage(storage_url(cfg), cfg.heartbeat_s, on_stale)
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=storage,
        sampler=make_sampler(cfg),
        directions=directions,
        load_if_exists=True,
    )
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise SparsetrainError(
            f"sweep.study_name: study '{cfg.study_name}' exists with directions {found}, not {directions} "
            "(objective or multi_objective changed); choose a new study_name"
        )
    study.set_user_attr("objective", cfg.objective)
    return study, storage


def suggest(trial: Trial, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """The trial's values, by dotted key, decoded back to config values."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, Choice):
            raw = trial.suggest_categorical(key, [encode(v) for v in spec.values])
        elif isinstance(spec, Range) and spec.integer:
            raw = trial.suggest_int(
                key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log
            )
        else:
            raw = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)
        values[key] = decode(spec, raw)
    return values


def run_trials(
    study: optuna.Study,
    storage: BaseStorage,
    objective: Callable[[Trial], Any],
    cfg: SweepConfig,
    on_stale: StaleCallback | None,
    on_trial: StaleCallback,
) -> None:
    """``sweep.n_trials`` more trials of ``study`` (or until ``sweep.timeout_s``); a trial that
    raises is recorded FAIL and the study goes on. After each trial ``on_trial`` (the progress
    line) runs, then, where the storage has no heartbeat of its own, the stale-trial check."""

    def after_each(study: optuna.Study, trial: FrozenTrial) -> None:
        on_trial(study, trial)
        if not isinstance(storage, RDBStorage):  # RDB storages check by themselves
            fail_stale_trials(study, storage, 2 * cfg.heartbeat_s, on_stale)

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our line per trial replaces Optuna's
    try:
        study.optimize(
            objective, n_trials=cfg.n_trials, timeout=cfg.timeout_s, catch=(Exception,), callbacks=[after_each]
        )
    finally:
        optuna.logging.set_verbosity(verbosity)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def attr_heartbeat(trial: Trial, storage: BaseStorage, interval_s: float) -> Iterator[None]:
    """Beat a heartbeat on the trial's user attributes while it runs, where the storage has none
    of its own (journal). SQL storages beat through Optuna and need nothing here."""
    if isinstance(storage, RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried at the next interval
                trial.set_user_attr(HEARTBEAT_ATTR, time.time())
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=beat, name=f"sweep-heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(
    study: optuna.Study, storage: BaseStorage, grace_s: float, on_stale: StaleCallback | None
) -> list[int]:
    """Mark FAIL the RUNNING trials whose heartbeat is older than ``grace_s``; their workers died.

    SQL storages: Optuna's own check (it also runs before every trial). Journal storage: the
    same check on the ``heartbeat`` user attribute (or the start time before the first beat).
    Returns the numbers of the trials failed here.
    """
    if isinstance(storage, RDBStorage):
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        # failed here = were running, now FAIL without a reason of their own (not a trial that
        # another worker finished meanwhile)
        now_failed = {
            t.number
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if "fail_reason" not in t.user_attrs
        }
        return sorted(before & now_failed)
    failed = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        last = float(trial.user_attrs.get(HEARTBEAT_ATTR, started))
        if now - last <= grace_s:
            continue
        try:
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        failed.append(trial.number)
        if on_stale is not None:
            on_stale(study, storage.get_trial(trial._trial_id))
    return failed


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """One plain record per trial of the study (every worker, every run), oldest first."""
    records = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        reason = attrs.get("fail_reason")
        if trial.state == TrialState.FAIL and not reason:
            reason = STALE_REASON
        end = trial.datetime_complete or (
            datetime.datetime.now() if trial.state == TrialState.RUNNING else None
        )
        records.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial.values[0] if trial.values else None,
                "params": dict(attrs.get("params", trial.params)),
                "config": dict(attrs.get("config", {})),
                "metrics": dict(attrs.get("metrics", {})),
                "history": dict(attrs.get("history", {})),
                "run_name": attrs.get("run_name"),
                "mlflow_run_id": attrs.get("mlflow_run_id"),
                "mlflow_parent_run_id": attrs.get("mlflow_parent_run_id"),
                "worker": attrs.get("worker"),
                "fail_reason": reason,
                "datetime_start": trial.datetime_start.isoformat(timespec="seconds")
                if trial.datetime_start
                else None,
                "duration_s": (end - trial.datetime_start).total_seconds()
                if end and trial.datetime_start
                else None,
            }
        )
    return records
