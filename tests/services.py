"""Real shared stores for the scale-out tests and benchmarks: a throwaway PostgreSQL cluster on
loopback and an MLflow tracking server on it (what README "Scale out" sets up by hand).

Everything here is started as a child process on a free port of 127.0.0.1, in a temporary folder
of its own, and stopped and removed by ``stop()`` (also when a test fails: the fixtures of
tests/scale/conftest.py call it in their teardown). As root, PostgreSQL's initdb and pg_ctl run as
the ``postgres`` user (the server refuses to run as root), in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin() -> Path | None:
    """The folder of PostgreSQL's server binaries (the newest installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for failure messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


class Postgres:
    """A PostgreSQL cluster of its own: ``initdb -A trust -U postgres`` in a temporary folder,
    served on 127.0.0.1:``port`` only (its socket in that folder too). ``url(db)`` is the
    SQLAlchemy URL of one of its databases, as a sweep worker and the MLflow server take it."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        if self.bin is None:
            raise FileNotFoundError(
                "PostgreSQL server binaries (initdb) not installed: apt-get install postgresql"
            )
        self.root = Path(tempfile.mkdtemp(prefix="sparsetrain-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.running = False

    def _as_pg(self, *cmd: str | Path) -> list[str]:
        """The command as the ``postgres`` user when we are root (the server refuses root)."""
        cmd = [str(part) for part in cmd]
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> Postgres:
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        init = subprocess.run(
            self._as_pg(self.bin / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres"),
            capture_output=True, text=True, timeout=120,
        )
        if init.returncode:
            raise RuntimeError(f"initdb failed: {init.stdout[-2000:]}{init.stderr[-2000:]}")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        start = subprocess.run(
            self._as_pg(self.bin / "pg_ctl", "-D", self.data, "-o", options, "-l", self.log, "-w", "start"),
            capture_output=True, text=True, timeout=120,
        )
        if start.returncode:
            raise RuntimeError(f"PostgreSQL did not start: {start.stderr[-1000:]}\n{tail(self.log)}")
        self.running = True
        return self

    def url(self, database: str, driver: str = "") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres") as conn:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop at once (``-m immediate``) and remove the cluster's folder."""
        if self.running:
            subprocess.run(
                self._as_pg(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"),
                capture_output=True, timeout=60,
            )
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` on a backend store URI, its artifacts proxied into ``artifacts``
    (``--artifacts-destination``: clients log to ``mlflow-artifacts:/`` through the server).
    :meth:`stop` then :meth:`start` again restarts it on the same port and the same store."""

    def __init__(self, backend_uri: str, artifacts: Path, log: Path, workers: int = 2) -> None:
        self.backend_uri, self.artifacts, self.log, self.workers = backend_uri, artifacts, log, workers
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self, wait_s: float = 180.0) -> MlflowServer:
        mlflow = Path(sys.executable).with_name("mlflow")
        cmd = [
            str(mlflow), "server", "--backend-store-uri", self.backend_uri,
            "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", str(self.workers),
        ]
        with open(self.log, "a") as log:
            # its own process group: stop() ends the server and its uvicorn workers together
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + wait_s
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not start on {self.backend_uri}:\n{tail(self.log)}")
            time.sleep(0.5)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``timeout``; waits until the
        port is free, so that :meth:`start` can bind it again."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.2)
