"""`kedro run --params / --config`: the bracket-aware splitter, the config file, the config loader
that lets a runtime value replace a base value of another kind, and all three through the real
`kedro` CLI in a scratch project."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from kedro.config import OmegaConfigLoader
from kedro.framework.cli.utils import _split_params

from sparsetrain.cli import parse_params, read_config_file, split_items, unflatten
from sparsetrain.config_loader import SparsetrainConfigLoader
from sparsetrain.errors import SparsetrainError

from kedro_project import ROOT, kedro_run

RUN_OPTIONS = {"pipelines", "params", "env", "tags", "node_names"}


# -- the splitter --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, items",
    [
        ("a=1,b=2", ["a=1", "b=2"]),
        (" a=1 , ,b=2, ", ["a=1", "b=2"]),  # blanks dropped, as Kedro's split_string does
        ("model.hidden=[64,32],training.epochs=1", ["model.hidden=[64,32]", "training.epochs=1"]),
        ("a=[[1,2],[3]],b={x: [4,5], y: {z: 6}}", ["a=[[1,2],[3]]", "b={x: [4,5], y: {z: 6}}"]),
        ("a='x,y',b=\"p,[q\",c=[']', \"}\"]", ["a='x,y'", 'b="p,[q"', "c=[']', \"}\"]"]),
        ("a='it''s, fine',b=\"say \\\"hi, there\\\"\"", ["a='it''s, fine'", 'b="say \\"hi, there\\""']),
        ("a=it's,b=2", ["a=it's", "b=2"]),  # a quote inside a plain scalar opens nothing
    ],
)
def test_split_items_splits_only_at_top_level_commas(text, items):
    assert split_items(text) == items


def test_parse_params_reads_yaml_values_and_nests_dotted_keys():
    params = parse_params(
        "model.hidden=[64,32],model.kind=mlp,training.lr=1e-3,sparsity.strength=1.0e-4,"
        "training.amp=true,data.path=null,data.target=,sweep.space.model.init=[xavier_uniform, orthogonal],"
        "a.nested=[[1, 2], {b: 'x,y'}],a.text='1e-3',a.date=2024-01-01"
    )
    assert params == {
        "model": {"hidden": [64, 32], "kind": "mlp"},
        "training": {"lr": 0.001, "amp": True},
        "sparsity": {"strength": 0.0001},
        "data": {"path": None, "target": None},
        "sweep": {"space": {"model": {"init": ["xavier_uniform", "orthogonal"]}}},
        "a": {"nested": [[1, 2], {"b": "x,y"}], "text": "1e-3", "date": "2024-01-01"},
    }
    assert isinstance(params["training"]["lr"], float)


def test_later_items_win_and_merge():
    params = parse_params("model={kind: cnn, dropout: 0.1},model.kind=mlp")
    assert params == {"model": {"kind": "mlp", "dropout": 0.1}}


@pytest.mark.parametrize(
    "item",
    ["a=1", "a=1e-3", "a=-2.5E+3", "a=.5", "a=1_000", "a=0x1F", "a=inf", "a=.inf", "a=yes", "a=NO", "a=true",
     "a=null", "a=~", "a=", "a=2024-01-01", "a=text", "a='quoted'", "a=${oc.env:X}", "a.b.c=x", "a=[1]",
     "a={b: 1e-2}"],
)
def test_values_are_what_kedro_makes_of_them(item):
    """Where Kedro's own `_split_params` copes (no comma), both give the same structure and types."""
    ours, kedros = parse_params(item), _split_params(None, None, item)
    assert ours == kedros and repr(ours) == repr(kedros)


@pytest.mark.parametrize(
    "text, message",
    [
        ('data.path=!!python/object/apply:os.system ["echo PWNED"]',
         "--params data.path: YAML tags are not allowed (got '!!python/object/apply:os.system ...'); "
         "quote the value"),
        ("training.epochs=1,model.hidden=[!!python/name:os.system]",
         "--params model.hidden: YAML tags are not allowed"),
        ("a=!!str 5", "--params a: YAML tags are not allowed (got '!!str ...')"),
        ("a=&x [*x]", "--params a: YAML anchors"),
        ("model.hidden=[64,32", "--params model.hidden: '[64,32' is not YAML"),
        ("training.epochs=1,model.hidden", "--params: item 'model.hidden' has no '='"),
        ("=3", "--params: item '=3' has an empty key"),
        ("a..b=3", "--params: item 'a..b=3' has an empty key"),
    ],
)
def test_bad_params_are_one_line_naming_the_key(text, message):
    with pytest.raises(SparsetrainError) as caught:
        parse_params(text)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_quoted_tag_is_just_text():
    assert parse_params("data.path='!!python/object/apply:os.system'") == {
        "data": {"path": "!!python/object/apply:os.system"}
    }


# -- the config file -------------------------------------------------------------------------------


def test_unflatten_mixes_nested_and_dotted_keys():
    params = {"model": {"kind": "mlp", "dropout": 0.1}, "model.hidden": [8], "sparsity.penalty": "l0",
              "sweep": {"space": {"sparsity.strength": [0.1]}}}
    assert unflatten(params) == {
        "model": {"kind": "mlp", "dropout": 0.1, "hidden": [8]},
        "sparsity": {"penalty": "l0"},
        "sweep": {"space": {"sparsity.strength": [0.1]}},  # values as written, like --params values
    }


def test_config_file_run_section(tmp_path):
    path = tmp_path / "f.yml"
    path.write_text(
        "run:\n  pipelines: ingestion\n  params:\n    sparsity.penalty: l0\n    training: {lr: 1e-3}\n"
    )
    assert read_config_file(str(path), RUN_OPTIONS) == {
        "pipelines": "ingestion", "params": {"sparsity": {"penalty": "l0"}, "training": {"lr": 0.001}}
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("run:\n  pipelines: ingestion\nextra: 1\n",
         "--config f.yml: unknown section 'extra'; only 'run:' is read"),
        ("runn:\n  pipelines: ingestion\n", "--config f.yml: unknown section 'runn' (did you mean 'run'?)"),
        ("run:\n  pipeline: ingestion\n",
         "--config f.yml: unknown run option 'pipeline' (did you mean 'pipelines'?)"),
        ("", "--config f.yml: expected a 'run:' section"),
        ("run: [1]\n", "--config f.yml: expected a 'run:' section"),
        ("run:\n  params: [1]\n", "--config f.yml: run.params must map parameter paths to values"),
        ("run:\n  params: {a: [1}\n", "--config f.yml: not valid YAML"),
        ("run:\n  params: !!python/object/apply:os.system [x]\n", "--config f.yml: not valid YAML"),
    ],
)
def test_bad_config_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "f.yml"
    path.write_text(text)
    with pytest.raises(SparsetrainError) as caught:
        read_config_file(str(path), RUN_OPTIONS)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


# -- the config loader ---------------------------------------------------------------------------


def load_parameters(loader_class, runtime_params):
    conf = str(ROOT / "conf")
    loader = loader_class(conf, runtime_params=runtime_params, base_env="base", default_run_env="local")
    return loader["parameters"]


@pytest.mark.filterwarnings("ignore:register_new_resolver")
def test_runtime_params_replace_a_value_of_another_kind():
    runtime = {
        "sweep": {"space": {"sparsity.strength": [0.001, 0.01]}},  # mapping -> list
        "model": {"hidden": {"odd": 1}},  # list -> mapping
        "data": {"path": {"a": 1}},  # scalar -> mapping
        "training": {"epochs": 1},  # scalar -> scalar, as before
    }
    with pytest.raises(TypeError, match="incompatible container types"):
        load_parameters(OmegaConfigLoader, runtime)  # the reason for the subclass

    params = load_parameters(SparsetrainConfigLoader, runtime)
    assert params["sweep"]["space"]["sparsity.strength"] == [0.001, 0.01]
    assert params["sweep"]["space"]["sparsity.penalty"] == ["l1", "l2", "elasticnet", "group_lasso", "l0"]
    assert params["model"]["hidden"] == {"odd": 1}
    assert params["model"]["kind"] == "linear"  # the rest of the section merges as before
    assert params["data"]["path"] == {"a": 1}
    assert params["training"]["epochs"] == 1
    assert load_parameters(SparsetrainConfigLoader, {}) == load_parameters(OmegaConfigLoader, {})


# -- end to end, through `python -m kedro run` ------------------------------------------------------


def run_params(run_id: str) -> dict[str, str]:
    return mlflow.get_run(run_id).data.params


def only_run() -> str:
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1, runs
    assert runs.iloc[0].status == "FINISHED"
    return runs.iloc[0].run_id


def assert_one_line_error(result, message: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {message}"), lines


def write_config(project: Path, text: str) -> str:
    (project / "f.yml").write_text(text)
    return "f.yml"


@pytest.mark.slow
def test_list_params_run_and_are_recorded(project):
    params = "model.hidden=[16,8],training.epochs=1,model.kind=mlp"
    result = kedro_run(project, params, args=("--pipelines", "__default__"))
    assert result.returncode == 0, result.stderr[-3000:]
    params = run_params(only_run())
    assert params["model.hidden"] == "[16, 8]"
    assert params["model.kind"] == "mlp"
    assert params["training.epochs"] == "1"


@pytest.mark.slow
@pytest.mark.parametrize(
    "params, message",
    [
        ('data.path=!!python/object/apply:os.system ["echo PWNED"]',
         "--params data.path: YAML tags are not allowed (got '!!python/object/apply:os.system ...'); "
         "quote the value"),
        ("training.epochs", "--params: item 'training.epochs' has no '='"),
    ],
)
def test_bad_params_fail_in_one_line(project, params, message):
    result = kedro_run(project, params, args=("--pipelines", "ingestion"))
    assert_one_line_error(result, message)
    assert not list(project.rglob("PWNED*"))
    assert mlflow.search_runs(search_all_experiments=True).empty


@pytest.mark.slow
def test_config_file_dotted_and_nested_params_are_honored(project):
    config = write_config(
        project,
        "run:\n  pipelines: ingestion\n  params:\n    sparsity.penalty: l0\n"
        "    model:\n      kind: mlp\n    model.hidden: [8, 4]\n",
    )
    result = kedro_run(project, args=("--config", config))
    assert result.returncode == 0, result.stderr[-3000:]
    params = run_params(only_run())
    assert params["sparsity.penalty"] == "l0"
    assert (params["model.kind"], params["model.hidden"]) == ("mlp", "[8, 4]")


@pytest.mark.slow
def test_config_file_replaces_a_sweep_range_by_a_list(project):
    """The space is validated at start-up: the list arrives there and is a categorical space."""
    space = (
        "run:\n  pipelines: ingestion\n  params:\n    sweep:\n      space:\n        sparsity.strength: {}\n"
    )
    result = kedro_run(project, args=("--config", write_config(project, space.format("[0.001, 0.01]"))))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    # the value really reaches the sweep's checks: an empty list is refused there, by name
    result = kedro_run(project, args=("--config", write_config(project, space.format("[]"))))
    assert_one_line_error(result, "sweep.space.sparsity.strength: the list of values is empty")


@pytest.mark.slow
def test_config_file_with_an_unknown_option_fails_in_one_line(project):
    config = write_config(project, "run:\n  pipelines: ingestion\n  tag: x\n")
    result = kedro_run(project, args=("--config", config))
    assert_one_line_error(result, "--config f.yml: unknown run option 'tag' (did you mean 'tags'?)")
