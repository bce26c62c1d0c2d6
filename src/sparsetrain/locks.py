"""Exclusive locks per registered model: one retrain (or rollback) at a time, one registration
check-then-create at a time.

An OS file lock (``flock``), keyed by the MLflow store and the model name, in the machine's temp
folder: two project folders that share one store and one model name exclude each other, and the
kernel releases the lock when its process dies, even by SIGKILL, so a killed retrain never
blocks the next one. The lock file holds who took it, for the message of the one refused.
Host-local by nature: runs on other hosts sharing an MLflow server are not excluded (see README,
"Retraining").
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path

from sparsetrain.errors import SparsetrainError

LOCK_FOLDER = Path(tempfile.gettempdir()) / "sparsetrain-locks"


def store_identity(tracking_uri: str) -> str:
    """The tracking URI with a relative SQLite path made absolute, so that ``sqlite:///mlflow.db``
    names the same store from wherever it is resolved."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return prefix + str(Path(tracking_uri[len(prefix):]).resolve())
    return tracking_uri


def lock_path(purpose: str, tracking_uri: str, model_name: str) -> Path:
    key = hashlib.sha256(f"{store_identity(tracking_uri)}\n{model_name}".encode()).hexdigest()[:20]
    return LOCK_FOLDER / f"{purpose}-{key}.lock"


class ModelLock:
    """``flock`` on :func:`lock_path`; :meth:`acquire` fails at once (``wait_s=0``) or after
    ``wait_s`` seconds with a one-line :class:`SparsetrainError` naming the holder."""

    def __init__(self, purpose: str, tracking_uri: str, model_name: str, label: str | None = None) -> None:
        self.purpose, self.model_name, self.label = purpose, model_name, label or purpose
        self.path = lock_path(purpose, tracking_uri, model_name)
        self._fd: int | None = None

    def acquire(self, wait_s: float = 0.0) -> ModelLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise SparsetrainError(
                        f"another {self.label} of model '{self.model_name}' is running ({holder}); "
                        "wait for it to finish, then run again"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> ModelLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return "holder unknown"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
        return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {since}"
