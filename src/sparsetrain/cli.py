"""`kedro run` with readable errors, and ``--params`` / ``--config`` that take YAML values.

Kedro loads the ``cli`` group of this module and lets its commands override the built-in ones.

- A SparsetrainError, wherever raised (option parsing included), prints one line and exits 2.
- ``--params``: Kedro splits at every comma, so ``model.hidden=[64,32]`` failed; here only commas
  outside brackets, braces and quotes separate items. Values read as Kedro reads them (YAML, with
  ``1e-3`` a float and dates left as text); a YAML tag, anchor or syntax error is one line
  naming the key, and nothing is constructed.
- ``--config FILE``: Kedro silently ignored dotted keys under ``run.params`` and raised a
  traceback on a file without ``run:``; here a key of ``run.params`` is a dotted path, as in
  ``--params``, and an unknown section or run option is one line.
"""

from __future__ import annotations

import copy
import difflib
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from kedro.framework.cli.project import run as kedro_run

from sparsetrain.errors import SparsetrainError


class _ValueLoader(yaml.SafeLoader):
    """yaml.safe_load with OmegaConf's scalars, which Kedro's ``--params`` uses: YAML 1.2 floats
    (``1e-3``; YAML 1.1 wants ``1.0e-3``) and no timestamps (``2024-01-01`` stays text)."""


_ValueLoader.add_implicit_resolver(  # the regex of omegaconf._yaml.get_yaml_loader
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
        |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
_ValueLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _ValueLoader.yaml_implicit_resolvers.items()
}


def split_items(text: str) -> list[str]:
    """``text`` split at the commas outside ``[]``, ``{}`` and quotes; blank items dropped."""
    items, start, depth, quote, last = [], 0, 0, "", ""
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote == '"':
                i += 1  # an escaped character, e.g. \"
            elif char == quote == "'" and text[i + 1 : i + 2] == "'":
                i += 1  # '' inside single quotes
            elif char == quote:
                quote = ""
        elif char in "'\"" and last in "=[{,:":  # a quote opens a scalar only at its start
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start, char = i + 1, ""
        if not char.isspace():
            last = char
        i += 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def parse_value(key: str, text: str) -> Any:
    """``text`` as YAML, or a SparsetrainError naming ``key``; tags are refused unconstructed."""
    try:
        for token in yaml.scan(text, Loader=_ValueLoader):
            if isinstance(token, yaml.TagToken):
                tag = "".join(token.value)
                shown = tag if text.strip() == tag else f"{tag} ..."
                raise SparsetrainError(
                    f"--params {key}: YAML tags are not allowed (got '{shown}'); quote the value"
                )
            if isinstance(token, (yaml.AnchorToken, yaml.AliasToken)):
                raise SparsetrainError(f"--params {key}: YAML anchors (&, *) are not allowed; quote it")
        return yaml.load(text, Loader=_ValueLoader)
    except yaml.YAMLError as error:
        problem = _problem(error)
        raise SparsetrainError(f"--params {key}: {text!r} is not YAML ({problem}); quote it") from None


def _problem(error: yaml.YAMLError) -> str:
    """What a YAML error says, in one line."""
    return getattr(error, "problem", None) or str(error).splitlines()[0]


def parse_params(text: str) -> dict[str, Any]:
    """``a.b=1,c=[2,3]`` as ``{"a": {"b": 1}, "c": [2, 3]}``: what Kedro's ``_split_params``
    returns (nested, later items win), without its comma and traceback problems."""
    params: dict[str, Any] = {}
    for item in split_items(text):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals:
            raise SparsetrainError(f"--params: item '{item}' has no '='; write key=value (training.epochs=1)")
        if "" in key.split("."):
            raise SparsetrainError(f"--params: item '{item}' has an empty key or key part")
        _merge(params, _nest(key, parse_value(key, value)))
    return params


def unflatten(params: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level dotted keys (``sparsity.penalty: l0``) as nested mappings, like ``--params``
    keys; nested and dotted keys may mix, a later key wins. Values are kept as written."""
    nested: dict[str, Any] = {}
    for key, value in params.items():
        _merge(nested, _nest(str(key), value))
    return nested


def _nest(key: str, value: Any) -> dict[str, Any]:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(into.get(key), dict) and isinstance(value, Mapping):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def read_config_file(path: str, options: set[str]) -> dict[str, Any]:
    """The ``run:`` section of a ``--config`` file, checked against ``options``, ``params`` nested."""
    name = f"--config {Path(path).name}"
    try:
        with open(path, encoding="utf-8") as file:
            raw = yaml.load(file, Loader=_ValueLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise SparsetrainError(f"{name}: not valid YAML ({_problem(error)}{where})") from None
    unknown = sorted(set(raw) - {"run"}) if isinstance(raw, dict) else []
    if unknown:
        hint = _hint(unknown[0], {"run"})
        raise SparsetrainError(f"{name}: unknown section '{unknown[0]}'{hint}; only 'run:' is read")
    run = raw.get("run") if isinstance(raw, dict) else None
    if not isinstance(run, dict):
        raise SparsetrainError(f"{name}: expected a 'run:' section mapping run options to values")
    for key in run:
        if key not in options:
            valid = ", ".join(sorted(options))
            raise SparsetrainError(f"{name}: unknown run option '{key}'{_hint(key, options)}; valid: {valid}")
    params = run.get("params")
    if isinstance(params, Mapping):
        run["params"] = unflatten(params)
    elif params is not None and not isinstance(params, str):
        raise SparsetrainError(f"{name}: run.params must map parameter paths to values (got {params!r})")
    return run


def _hint(word: str, choices: set[str]) -> str:
    close = difflib.get_close_matches(str(word), sorted(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fail(error: SparsetrainError) -> NoReturn:
    click.secho(f"Error: {error}", fg="red", err=True)
    sys.exit(2)


def _params_callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """``--params`` parsed by :func:`parse_params`; a mapping from ``--config`` is already parsed."""
    try:
        return dict(value) if isinstance(value, Mapping) else parse_params(value or "")
    except SparsetrainError as error:
        _fail(error)


def _config_callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Kedro's ``_config_file_callback``: the file's ``run:`` options become the defaults of the
    other options (the command line still wins), checked and with ``params`` nested."""
    if value:
        options = {p.name for p in ctx.command.params} - {"config"}
        try:
            ctx.default_map = {**(ctx.default_map or {}), **read_config_file(value, options)}
        except SparsetrainError as error:
            _fail(error)
    return value


def _with_callback(option: click.Parameter) -> click.Parameter:
    callbacks = {"params": _params_callback, "config": _config_callback}
    if option.name not in callbacks:
        return option
    option = copy.copy(option)
    option.callback = callbacks[option.name]
    return option


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


@cli.command(
    name="run",
    params=[_with_callback(option) for option in kedro_run.params],
    help=kedro_run.help,
    short_help=kedro_run.short_help,
)
def run(**kwargs) -> None:
    try:
        kedro_run.callback(**kwargs)
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        _fail(user_error)
