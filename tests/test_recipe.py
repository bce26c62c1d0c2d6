"""The recipe turns config sections into core objects: nothing may be dropped on the way, and the
config's choices are exactly the names core knows."""

from __future__ import annotations

import inspect
import logging
import typing
from dataclasses import fields

import pytest
import torch
from digits_data import standardized_digits

from sparsetrain.config import ModelConfig, SparsityConfig, TrainingConfig
from sparsetrain.core.data import DatasetInfo, Splits, load_digits_dataset
from sparsetrain.core.models import build_model
from sparsetrain.core.penalties import PENALTIES, make_penalty
from sparsetrain.core.sparsity.pruner import PRUNING_METHODS, make_pruner
from sparsetrain.core.training import TrainSettings, fit, seed_everything
from sparsetrain.recipe import build_penalty, build_pruner, train_network, train_settings

RECIPE_ONLY_TRAINING_KEYS = {"verbose", "distributed"}  # the progress callback; the ranks (fit_on_ranks)
PENALTY_KEYS = {"penalty", "strength", "l1_ratio", "groups"}


def choices(section, key: str) -> tuple:
    return typing.get_args(section.model_fields[key].annotation)


def pruner_keywords() -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(make_pruner).parameters.values()
    return {p.name: p for p in parameters if p.kind is p.KEYWORD_ONLY}


def test_config_choices_are_the_names_core_knows():
    assert choices(SparsityConfig, "penalty") == tuple(PENALTIES)
    assert choices(SparsityConfig, "pruning") == PRUNING_METHODS


def test_every_training_key_reaches_the_loop_or_the_recipe():
    loop_keys = {f.name for f in fields(TrainSettings)}
    assert set(TrainingConfig.model_fields) == loop_keys | RECIPE_ONLY_TRAINING_KEYS
    assert train_settings(TrainingConfig()) == TrainSettings()  # the same defaults


def test_train_settings_carries_every_value():
    values = dict(optimizer="sgd", lr=0.5, batch_size=None, epochs=3, lr_schedule="step", early_stopping=None,
                  device="cpu", seed=7, amp=True)
    assert train_settings(TrainingConfig(**values, verbose=False)) == TrainSettings(**values)


def test_every_sparsity_key_reaches_the_penalty_or_the_pruner():
    selection = {"selection", "max_features"}  # read by train_network's forward-selection branch
    assert set(SparsityConfig.model_fields) == PENALTY_KEYS | {"pruning"} | set(pruner_keywords()) | selection
    defaults = SparsityConfig()
    assert {name: p.default for name, p in pruner_keywords().items()} == {
        name: getattr(defaults, name) for name in pruner_keywords()
    }


@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_build_pruner_passes_every_value(method):
    cfg = SparsityConfig(pruning=method, target_density=0.3, threshold=0.05, scope="layer", prune_start=0.1,
                         prune_end=0.6, finetune_epochs=2)
    values = {name: getattr(cfg, name) for name in pruner_keywords()}
    assert build_pruner(cfg) == make_pruner(method, **values)


@pytest.mark.parametrize("name", PENALTIES)
def test_build_penalty_passes_every_value(name):
    cfg = SparsityConfig(penalty=name, strength=0.02, l1_ratio=0.3, groups="neuron")
    assert build_penalty(cfg) == make_penalty(name, 0.02, l1_ratio=0.3, groups="neuron")


@pytest.fixture(scope="module")
def digits():
    X_tr, y_tr, X_va, y_va, X_te, y_te = standardized_digits(seed=42)
    return Splits(X_tr, y_tr, X_va, y_va, X_te, y_te), DatasetInfo.of(load_digits_dataset())


def test_train_network_is_core_fit_on_the_converted_sections(digits):
    splits, info = digits
    model_cfg = ModelConfig(kind="mlp", hidden=(16,))
    sparsity_cfg = SparsityConfig(penalty="l1", strength=1e-3, pruning="gmp", target_density=0.3)
    training_cfg = TrainingConfig(epochs=3, verbose=False)
    network, history = train_network(splits, info, model_cfg, sparsity_cfg, training_cfg)

    seed_everything(training_cfg.seed)
    by_hand, by_hand_history = fit(
        build_model("mlp", 64, 10, hidden=(16,)), splits.X_train, splits.y_train, splits.X_val, splits.y_val,
        task="classification", settings=TrainSettings(epochs=3), penalty=make_penalty("l1", 1e-3),
        pruner=make_pruner("gmp", target_density=0.3),
    )
    assert history.train_loss == by_hand_history.train_loss
    for a, b in zip(network.state_dict().values(), by_hand.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("verbose", [True, False])
def test_verbose_logs_one_line_per_epoch(digits, caplog, verbose):
    splits, info = digits
    with caplog.at_level(logging.INFO, logger="sparsetrain.core.training"):
        training_cfg = TrainingConfig(epochs=2, verbose=verbose)
        train_network(splits, info, ModelConfig(), SparsityConfig(), training_cfg)
    lines = [r for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == (2 if verbose else 0)
