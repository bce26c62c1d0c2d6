"""`kedro run` with readable errors: a SparsetrainError prints one line and exits 2.

Kedro loads the ``cli`` group of this module and lets its commands override the built-in ones.
"""

from __future__ import annotations

import sys

import click
from kedro.framework.cli.project import run as kedro_run

from sparsetrain.errors import SparsetrainError


def _user_error(error: BaseException | None) -> SparsetrainError | None:
    """The SparsetrainError behind ``error``, however deep Kedro wrapped it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SparsetrainError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@click.group(name="sparsetrain")
def cli() -> None:
    """sparsetrain commands."""


@cli.command(name="run", params=kedro_run.params, help=kedro_run.help, short_help=kedro_run.short_help)
def run(**kwargs) -> None:
    try:
        kedro_run.callback(**kwargs)
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        click.secho(f"Error: {user_error}", fg="red", err=True)
        sys.exit(2)
