"""One measurement of the study: a setting trained on a dataset with a seed, through the project's
recipe, and every number the claims read off it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from sparsetrain.config import SparsetrainConfig, parse_config, unflatten
from sparsetrain.core.data import (
    Dataset,
    DatasetInfo,
    Splits,
    Standardizer,
    load_digits_dataset,
    load_fashion_mnist,
    make_correlated_groups,
    make_synthetic,
    split_dataset,
)
from sparsetrain.core.metrics import task_metrics
from sparsetrain.core.models import prunable_weights
from sparsetrain.core.training import EpochLog
from sparsetrain.recipe import compress_splits, train_network
from sparsetrain.scoring import evaluate_network, predict

from .design import COMPONENTS, SETTINGS, Preset

GROUPS = {"n_groups": 5, "group_size": 5, "n_noise": 40, "correlation": 0.9}
FULL_BATCH_EPOCHS = 10


def fashion_available() -> bool:
    try:
        load_fashion_mnist(max_train_samples=10)
    except Exception:  # noqa: BLE001 - absent or unreadable files: the study says it skipped them
        return False
    return True


def load(dataset: str, seed: int, preset: Preset) -> Dataset:
    """The study's datasets; the generated ones differ by seed, the real ones do not."""
    if dataset == "digits":
        return load_digits_dataset()
    if dataset == "fashion_mnist":
        return load_fashion_mnist(max_train_samples=preset.fashion_train_rows)
    if dataset == "synthetic":
        return make_synthetic("classification", 2000, 50, 10, 3, seed)
    if dataset == "correlated_groups":
        return make_correlated_groups(n_samples=600, seed=seed, **GROUPS)
    raise ValueError(f"unknown study dataset {dataset!r}")


def config_for(setting: str, dataset: Dataset, name: str, seed: int, preset: Preset) -> SparsetrainConfig:
    overrides = dict(SETTINGS[setting])
    if overrides.get("compression.method", "none") != "none":
        overrides["compression.n_components"] = COMPONENTS.get(name, 10)
    epochs = preset.init_epochs if setting.startswith("init_") else preset.epochs
    if setting == "fullbatch":  # one step an epoch: ten times the epochs, so both run a while
        epochs *= FULL_BATCH_EPOCHS
    source = name if name in ("digits", "fashion_mnist") else "synthetic"  # the data are handed in
    overrides = {
        "data.source": source, "data.task": dataset.task, "data.seed": seed, "training.seed": seed,
        "training.epochs": epochs, "training.verbose": False, **overrides,
    }
    return parse_config(unflatten(overrides))


def _grouping(network: torch.nn.Module) -> dict[str, float]:
    """C2, per correlated group of columns (the weight of a column: its absolute weights summed
    over the outputs): ``group_evenness``, the group's mean weight over its largest (1 = its
    columns weigh alike, 1/size = one column carries the group: Zou & Hastie's grouping effect);
    ``group_retention``, the fraction of its columns with a nonzero weight; ``noise_retention``,
    the fraction of noise columns kept."""
    weights = prunable_weights(network)[0].detach().abs().sum(dim=0).numpy()
    size, n_groups = GROUPS["group_size"], GROUPS["n_groups"]
    groups = [weights[g * size : (g + 1) * size] for g in range(n_groups)]
    evenness = [g.mean() / g.max() if g.max() > 0 else 0.0 for g in groups]
    return {
        "group_evenness": float(np.mean(evenness)),
        "group_retention": float(np.mean([(g != 0).mean() for g in groups])),
        "noise_retention": float((weights[n_groups * size :] != 0).mean()),
    }


def _loss_at(logs: list[EpochLog], budget: float) -> tuple[float, float]:
    """The validation loss of the last epoch finished within ``budget`` seconds of training, and
    how many epochs that was (the first epoch's loss if even it took longer)."""
    elapsed, loss, epochs = 0.0, logs[0].val_loss, 1.0
    for log in logs:
        elapsed += log.seconds
        if elapsed > budget:
            break
        loss, epochs = log.val_loss, float(log.epoch)
    return float(loss), epochs


def measure(setting: str, name: str, seed: int, preset: Preset) -> dict[str, Any]:
    """Train one setting on one dataset with one seed; returns its metrics and per-epoch curves."""
    dataset = load(name, seed, preset)
    cfg = config_for(setting, dataset, name, seed, preset)
    raw = split_dataset(dataset, cfg.data.val_size, cfg.data.test_size, seed)
    standardizer = Standardizer().fit(raw.X_train)
    standardized = Splits(*(standardizer.transform(a) if i % 2 == 0 else a for i, a in enumerate(
        (raw.X_train, raw.y_train, raw.X_val, raw.y_val, raw.X_test, raw.y_test))))
    started = time.perf_counter()
    _, _, splits = compress_splits(standardized, cfg.compression, seed)
    compress_seconds = time.perf_counter() - started
    info = DatasetInfo.of(dataset)
    logs: list[EpochLog] = []
    network, history = train_network(
        splits, info, cfg.model, cfg.sparsity, cfg.training, callbacks=[logs.append]
    )
    metrics = evaluate_network(network, splits, info, history, speed=False)
    train_predictions = predict(network, splits.X_train, info.task)
    metrics.update(task_metrics(info.task, splits.y_train, train_predictions, "train"))
    metrics["zero_fraction"] = 1.0 - metrics["density"]
    metrics["fit_seconds"] = compress_seconds + history.seconds
    if info.task == "classification":
        metrics["generalization_gap"] = metrics["train_accuracy"] - metrics["test_accuracy"]
    if history.train_loss:
        metrics["train_loss_final"] = history.train_loss[-1]
    if history.val_loss:
        metrics["best_val_loss"] = min(history.val_loss)
    if name == "correlated_groups":
        metrics.update(_grouping(network))
    return {"metrics": metrics, "logs": logs}


def add_equal_time_loss(records: list[dict[str, Any]]) -> None:
    """C7: per dataset and seed, both settings' validation loss after the same training time (the
    shorter of the two runs): the one that got there sooner has the lower loss."""
    by_key: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        if record["setting"] in ("minibatch", "fullbatch"):
            by_key.setdefault((record["dataset"], record["seed"]), []).append(record)
    for pair in by_key.values():
        budget = min(sum(log.seconds for log in r["logs"]) for r in pair)
        for record in pair:
            loss, epochs = _loss_at(record["logs"], budget)
            record["metrics"]["val_loss_at_equal_time"] = loss
            record["metrics"]["epochs_at_equal_time"] = epochs
            record["metrics"]["equal_time_seconds"] = budget
