"""The sweep section: the shipped file validates; every bad sweep fails before any trial with
one line naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sparsetrain.config import SweepConfig, parse_sweep, parse_sweep_section
from sparsetrain.config.space import Choice, Range, direction, grid_space, pareto_mask, run_name
from sparsetrain.errors import SparsetrainError

ROOT = Path(__file__).resolve().parents[2]
GOOD_SPACE = {"sparsity.penalty": ["l1", "l0"]}


def sweep(**overrides):
    return {"sweep": {"space": GOOD_SPACE, **overrides}}


def test_shipped_parameters_validate():
    params = {}
    for path in (ROOT / "conf" / "base").glob("parameters_*.yml"):
        params.update(yaml.safe_load(path.read_text()))
    cfg = parse_sweep(params)
    space = cfg.search_space()
    assert space["sparsity.penalty"] == Choice(("l1", "l2", "elasticnet", "group_lasso", "l0"))
    assert space["sparsity.strength"] == Range(1e-6, 1e-1, log=True)
    assert cfg.sampler == "tpe" and cfg.n_trials == 20 and cfg.direction == "maximize"


@pytest.mark.parametrize(
    "params, key",
    [
        (sweep(space={"sparsity.penalty": ["l7"]}), "sweep.space.sparsity.penalty"),
        (sweep(space={"sparsity.penality": ["l1"]}), "sweep.space.sparsity.penality"),
        (sweep(space={"optimizer": ["adam"]}), "sweep.space.optimizer"),
        (sweep(space={"model.init": []}), "sweep.space.model.init"),
        (sweep(space={"sparsity.strength": {"low": 1e-2, "high": 1e-4}}), "sweep.space.sparsity.strength"),
        (
            sweep(space={"sparsity.strength": {"low": 0.0, "high": 1.0, "log": True}}),
            "sweep.space.sparsity.strength",
        ),
        (sweep(space={"sparsity.strength": {"low": -1.0, "high": 1.0}}), "sweep.space.sparsity.strength"),
        (sweep(space={"sparsity.strength": {"lo": 1e-4, "high": 1e-2}}), "sweep.space.sparsity.strength"),
        (sweep(space={"sparsity.strength": 1e-3}), "sweep.space.sparsity.strength"),
        (sweep(space={"training.epochs": {"low": 2.5, "high": 10}}), "sweep.space.training.epochs"),
        (sweep(space={"model.init": {"low": 1, "high": 2}}), "sweep.space.model.init"),
        (sweep(space={"data.seed": [1, 2]}), "sweep.space.data.seed"),
        (sweep(space={"sparsity.prune_start": [0.9]}), "sweep.space.sparsity.prune_start"),
        (
            sweep(space={"model.kind": ["cnn"]}) | {"compression": {"method": "pca", "n_components": 5}},
            "sweep.space.model.kind",
        ),
        (
            sweep(sampler="grid", space={"sparsity.strength": {"low": 1e-4, "high": 1e-2}}),
            "sweep.space.sparsity.strength",
        ),
        (sweep(sampler="bayes"), "sweep.sampler"),
        (sweep(objective="accuracy"), "sweep.objective"),
        (sweep(objective="val_r2"), "sweep.objective"),
        (sweep(storage="optuna.db"), "sweep.storage"),
        (sweep(n_trials=0), "sweep.n_trials"),
        (sweep(n_trials=None), "sweep.n_trials"),
        (sweep(max_density=1.5), "sweep.max_density"),
        (sweep(trials=3), "sweep.trials"),
        (sweep(space={}), "sweep.space"),
        ({"sweep": "tpe"}, "sweep"),
        (sweep() | {"data": {"val_size": 0.0}}, "data.val_size"),
    ],
)
def test_bad_sweeps_name_their_key(params, key):
    with pytest.raises(SparsetrainError) as error:
        parse_sweep(params)
    message = str(error.value)
    assert key in message, message
    assert "\n" not in message


def test_nested_cli_keys_and_text_lists_are_accepted():
    # `--params sweep.space.model.init=[xavier_uniform]` arrives nested, its value as parsed YAML or text
    cfg = parse_sweep(
        sweep(space={"sparsity.penalty": ["l1"], "model": {"init": "[xavier_uniform, orthogonal]"}})
    )
    assert cfg.search_space()["model.init"] == Choice(("xavier_uniform", "orthogonal"))


def test_integer_and_grid_ranges():
    cfg = SweepConfig(
        sampler="grid",
        space={
            "training.epochs": {"low": 2, "high": 8, "step": 3},
            "model.hidden": [[64], [32, 16]],
            "sparsity.strength": {"low": 1e-3, "high": 3e-3, "step": 1e-3},
        },
    )
    space = cfg.search_space()
    assert space["training.epochs"].integer
    assert grid_space(space) == {
        "training.epochs": [2, 5, 8],
        "model.hidden": ["[64]", "[32, 16]"],
        "sparsity.strength": [0.001, 0.002, 0.003],
    }


def test_directions_names_and_pareto():
    assert direction("val_accuracy") == "maximize"
    assert direction("val_loss") == direction("val_rmse") == "minimize"
    flat = {
        "model.kind": "mlp",
        "sparsity.penalty": "l0",
        "sparsity.strength": 3e-4,
        "model.init": "kaiming_normal",
        "training.lr": 0.003,
    }
    assert run_name(flat, ["sparsity.penalty", "training.lr"]) == "mlp-l0-3e-04-kaiming_normal-lr=0.003"
    # (accuracy, density): the second point is dominated by the first
    assert pareto_mask([0.9, 0.8, 0.95, 0.95], [0.2, 0.3, 0.5, 0.6]) == [True, False, True, False]
    assert pareto_mask([0.3, 0.2, 0.1], [0.5, 0.4, 0.9], maximize=False) == [False, True, True]


def test_the_section_alone_does_not_judge_other_runs():
    # `kedro run --params data.task=regression` (no sweep) must not fail on the sweep's objective
    params = sweep() | {"data": {"source": "synthetic", "task": "regression"}}
    assert parse_sweep_section(params["sweep"]).objective == "val_accuracy"
    with pytest.raises(SparsetrainError, match="sweep.objective"):
        parse_sweep(params)
