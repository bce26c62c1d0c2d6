"""What a `kedro run` prints: about one line per node and one per epoch (conf/logging.yml).

``KEDRO_LOGGING_CONFIG=conf/logging_full.yml kedro run`` prints Kedro's full log instead.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_COMPLETED_NODE = re.compile(r"^Completed node: (?P<name>.+)$")
_COMPLETED_TASKS = re.compile(r"^Completed (?P<done>\d+) out of (?P<total>\d+) tasks$")


class OneLinePerNode(logging.Filter):
    """Fold the runner's two lines per node ("Completed node: x", "Completed 3 out of 13 tasks")
    into one: ``[3/13] x``."""

    def __init__(self) -> None:
        super().__init__()
        self._last_node = ""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        node = _COMPLETED_NODE.match(message)
        if node:
            self._last_node = node["name"]
            return False
        tasks = _COMPLETED_TASKS.match(message)
        if tasks:
            record.msg, record.args = f"[{tasks['done']}/{tasks['total']}] {self._last_node}", ()
        return True


@contextmanager
def epoch_progress(total: int, log_line: Callable) -> Iterator[Callable]:
    """A training callback: a rich progress bar on a terminal, one log line per epoch elsewhere
    (CI logs, files, pipes)."""
    if not sys.stderr.isatty():
        yield log_line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("epochs", total=total, status="")

        def advance(log) -> None:
            val = "" if log.val_loss is None else f" val {log.val_loss:.4f}"
            status = f"loss {log.train_loss:.4f}{val} density {log.density:.3f}"
            bar.update(task, completed=log.epoch + 1, total=log.total_epochs, status=status)

        yield advance



def ignore_library_warnings() -> None:
    """Deprecations and notices inside Kedro, kedro-mlflow and MLflow that this project cannot act
    on, so that a clean `kedro run` prints no warning; anything else still shows. Installed by
    the project settings and, earlier, by the CLI hook entry point (:mod:`sparsetrain.cli_hooks`):
    kedro-mlflow's CLI defines a PythonModel without type hints while Kedro loads the plugins'
    commands, before the project settings exist."""
    for pattern in LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
    # MLflow re-enables its own UserWarnings inside some calls (warnings.catch_warnings +
    # simplefilter("once")), which no filter outlives: drop them where Kedro logs warnings.
    py_warnings = logging.getLogger("py.warnings")
    if not any(isinstance(f, _DropLibraryNotices) for f in py_warnings.filters):
        py_warnings.addFilter(_DropLibraryNotices())


LIBRARY_NOTICES = (r"register_new_resolver\(\) is deprecated", r".*Add type hints to the `predict` method")


class _DropLibraryNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(re.search(pattern, message) for pattern in LIBRARY_NOTICES)


def quiet_defaults() -> None:
    """The default log, unless the user chose another logging config: :class:`OneLinePerNode` on
    the root handlers (Kedro refuses filter factories and project handler classes in logging.yml),
    and MLflow's INFO lines and artifact progress bars off (MLflow sets its logger's level at
    import, after logging.yml; a bar per small artifact download says nothing)."""
    if os.environ.get("KEDRO_LOGGING_CONFIG"):
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OneLinePerNode) for f in handler.filters):
            handler.addFilter(OneLinePerNode())
