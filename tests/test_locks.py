"""One retrain at a time per model: real flock locks, across processes, released by a kill."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from sparsetrain.errors import SparsetrainError
from sparsetrain.locks import ModelLock, lock_path, store_identity

HOLD = """
import sys, time
from sparsetrain.locks import ModelLock
ModelLock("retrain", sys.argv[1], "m").acquire()
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def hold_in_child(uri: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, uri], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_holder_is_refused_at_once_naming_the_first(uri):
    child = hold_in_child(uri)
    try:
        started = time.monotonic()
        with pytest.raises(SparsetrainError) as error:
            ModelLock("retrain", uri, "m", label="retrain or rollback").acquire()
        assert time.monotonic() - started < 2
        message = str(error.value)
        assert "another retrain or rollback of model 'm' is running" in message
        assert f"pid {child.pid}" in message and "\n" not in message
    finally:
        child.kill()
        child.wait()


def test_a_killed_holder_releases_the_lock(uri):
    child = hold_in_child(uri)
    child.send_signal(signal.SIGKILL)
    child.wait()
    lock = ModelLock("retrain", uri, "m").acquire()
    assert lock.held
    lock.release()


def test_locks_are_per_store_model_and_purpose(uri, tmp_path):
    with ModelLock("retrain", uri, "m"):
        ModelLock("retrain", uri, "other").acquire().release()
        ModelLock("register", uri, "m").acquire().release()
        ModelLock("retrain", f"sqlite:///{tmp_path / 'other.db'}", "m").acquire().release()


def test_a_waiting_acquire_gets_the_lock_once_the_holder_ends(uri):
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD.replace("time.sleep(60)", "time.sleep(1)"), uri], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(SparsetrainError):
        ModelLock("retrain", uri, "m").acquire()
    lock = ModelLock("retrain", uri, "m").acquire(wait_s=30)
    assert lock.held and child.wait() == 0
    lock.release()


def test_a_relative_sqlite_store_is_the_same_store_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store_identity("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert lock_path("retrain", "sqlite:///mlflow.db", "m") == lock_path(
        "retrain", f"sqlite:///{tmp_path / 'mlflow.db'}", "m"
    )
    assert store_identity("http://mlflow:5000") == "http://mlflow:5000"
