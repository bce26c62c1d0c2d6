"""Data-parallel training: 2 CPU ranks (gloo, real processes) take the same steps as one process
with the same global batch and seed, for every kind of mask; the shards split each batch once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from sparsetrain.config import parse_config
from sparsetrain.core import distributed
from sparsetrain.core.data import DatasetInfo, Splits
from sparsetrain.core.distributed import Shard
from sparsetrain.core.training import steps_per_epoch
from sparsetrain.errors import SparsetrainError
from sparsetrain.recipe import fit_on_ranks, train_network

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_splits() -> tuple[Splits, DatasetInfo]:
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    train, val = order[:1400], order[1400:]
    splits = Splits(X[train], y[train], X[val], y[val], X[val], y[val])
    info = DatasetInfo("classification", len(X), 64, tuple(f"pixel_{i}" for i in range(64)), n_classes=10)
    return splits, info


def train(splits, info, world_size: int, sparsity: dict, batch_size: int | str = 77):
    cfg = parse_config({
        "model": {"kind": "mlp", "hidden": [32]},
        "sparsity": sparsity,
        "training": {"epochs": 2, "batch_size": batch_size, "device": "cpu", "verbose": False,
                     "early_stopping": None, "distributed": {"world_size": world_size}},
    })
    seen = []
    network, history = train_network(
        splits, info, cfg.model, cfg.sparsity, cfg.training, callbacks=[seen.append]
    )
    return network, history, seen


@pytest.mark.parametrize(
    "sparsity",
    [
        {"penalty": "l1", "strength": 1e-3},  # proximal steps: exact zeros
        {"pruning": "gmp", "target_density": 0.2},
        {"pruning": "rigl", "target_density": 0.1, "update_every": 5},  # regrowth by the averaged gradient
        {"pruning": "set", "target_density": 0.1, "update_every": 5},
    ],
    ids=["l1", "gmp", "rigl", "set"],
)
def test_two_ranks_reach_the_weights_and_masks_of_one_process(digits_splits, sparsity):
    splits, info = digits_splits
    # 1400 rows in batches of 77: the last batch (14 rows) is uneven, and splits 7 / 7
    one, one_history, _ = train(splits, info, 1, sparsity)
    two, two_history, logs = train(splits, info, 2, sparsity)
    for (name, a), (_, b) in zip(one.state_dict().items(), two.state_dict().items()):
        assert torch.equal(a != 0, b != 0), f"{name}: masks differ"
        assert float((a - b).abs().max()) < 1e-4, f"{name}: weights differ"
    assert np.allclose(one_history.train_loss, two_history.train_loss, rtol=1e-5)  # all ranks' rows
    assert [log.epoch for log in logs] == [0, 1]  # rank 0's progress reached the caller


def test_shards_split_every_batch_once():
    batch = torch.arange(11)
    parts = [Shard(rank, 3).rows(batch) for rank in range(3)]
    assert [len(p) for p in parts] == [4, 4, 3]
    assert torch.equal(torch.cat(parts), batch)
    assert len(Shard(1, 2).rows(torch.arange(1))) == 0  # a rank may get no row of a tiny batch


def test_batch_norm_skips_a_last_batch_too_small_for_every_rank():
    assert steps_per_epoch(101, 10, 1) == 11
    assert steps_per_epoch(101, 10, 2) == 10  # one process: a last batch of one is skipped
    assert steps_per_epoch(103, 10, 4) == 10  # two ranks: a last batch of 3 leaves one rank a single row


def test_more_cuda_ranks_than_gpus_is_refused_before_work():
    with pytest.raises(SparsetrainError, match="training.distributed.world_size 64 needs 64 GPUs"):
        distributed.check_world(64, "cuda")
    distributed.check_world(2, "cpu")  # CPU ranks share the cores


def test_a_world_size_that_disagrees_with_torchrun_is_refused(monkeypatch, digits_splits):
    splits, info = digits_splits
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    cfg = parse_config({"training": {"distributed": {"world_size": 4}}})
    with pytest.raises(SparsetrainError, match="world_size is 4 but torchrun started 2 ranks"):
        fit_on_ranks({}, cfg.training, [])
