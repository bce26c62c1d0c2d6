"""What the study runs: the settings (configurations over the project's defaults), the presets,
and the claims C1..C8 of the method, each a comparison of settings on one metric.

Every setting is trained through the project's own recipe (:func:`sparsetrain.recipe.train_network`)
on the same seeds, so that the measurements of two settings are paired by seed (same split, same
initialization stream) and the verdicts come from paired tests (:mod:`sparsetrain.core.stats`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sparsetrain.config import StudyConfig

MLP = {"model.kind": "mlp", "model.hidden": [300, 100], "sparsity.penalty": "none"}
LINEAR = {"model.kind": "linear"}


@dataclass(frozen=True)
class Preset:
    """How long each setting trains, and how much of Fashion-MNIST is used."""

    epochs: int
    init_epochs: int  # C3: convergence is read off the train loss after this many epochs
    seeds: int | None  # None: study.seeds
    datasets: tuple[str, ...] | None  # None: study.datasets
    fashion_train_rows: int | None


PRESETS = {
    "full": Preset(epochs=20, init_epochs=5, seeds=None, datasets=None, fashion_train_rows=8000),
    "quick": Preset(epochs=3, init_epochs=2, seeds=2, datasets=("digits",), fashion_train_rows=2000),
}

# name -> dotted overrides of the run's parameters (on top of the project's defaults)
SETTINGS: dict[str, dict[str, Any]] = {
    "l1": {**LINEAR, "sparsity.penalty": "l1", "sparsity.strength": 1e-3},
    "l2": {**LINEAR, "sparsity.penalty": "l2", "sparsity.strength": 1e-3},
    "mlp_dense": dict(MLP),
    "mlp_gmp10": {**MLP, "sparsity.pruning": "gmp", "sparsity.target_density": 0.1},
    "mlp_dropout": {**MLP, "model.dropout": 0.3},
    "mlp_batchnorm": {**MLP, "model.batch_norm": True},
    # C3: plain momentum SGD, where the starting scale matters (Adam rescales it away)
    **{
        f"init_{init}": {**MLP, "model.init": init, "training.optimizer": "momentum", "training.lr": 0.01,
                         "training.lr_schedule": "constant", "training.early_stopping": None}
        for init in ("kaiming_uniform", "xavier_uniform", "normal")
    },
    **{f"compress_{m}": {**LINEAR, "compression.method": m} for m in ("pca", "svd", "random_projection")},
    # C7: mini-batches of `auto` against one full batch per step (the runner gives it 10x the epochs)
    "minibatch": {**LINEAR, "training.batch_size": "auto", "training.early_stopping": None},
    "fullbatch": {**LINEAR, "training.batch_size": None, "training.early_stopping": None},
    # C2, on the correlated-groups data: regression, one strength in the sparse regime (the noise
    # columns are zeroed by both)
    "group_l1": {**LINEAR, "sparsity.penalty": "l1", "sparsity.strength": 0.2},
    "group_elasticnet": {**LINEAR, "sparsity.penalty": "elasticnet", "sparsity.strength": 0.2,
                         "sparsity.l1_ratio": 0.5},
}

COMPONENTS = {"digits": 16, "fashion_mnist": 50, "synthetic": 10}


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    settings: tuple[str, ...]
    metric: str  # the recorded metric the verdict is computed from
    kind: str  # better | within | differ: how the per-seed differences are tested
    pairs: tuple[tuple[str, str], ...]  # (claimed better, other): d = sign * (first - second)
    sign: float = 1.0  # -1 when lower is better
    margin: float = 0.0  # within: the loss allowed
    datasets: tuple[str, ...] | None = None  # None: the study's datasets
    also: tuple[str, ...] = field(default_factory=tuple)  # metrics shown beside it
    # (setting, check): a fact every run of that setting must show, else the claim does not hold
    condition: tuple[str, Callable[[dict[str, float]], str | None]] | None = None


def _storage_saved(metrics: dict[str, float]) -> str | None:
    saved = 1 - metrics["bytes_sparse"] / metrics["bytes_dense"]
    return None if saved >= 0.85 else f"stored bytes saved {saved:.1%} < 85%"


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "L1 yields exact zeros and a sparse model; L2 only shrinks", ("l1", "l2"), "zero_fraction",
          "better", (("l1", "l2"),), also=("test_accuracy",)),
    Claim("C2", "ElasticNet keeps groups of correlated features where L1 picks one of them (metric: the "
          "evenness of the weights within each group of 5 columns correlated at 0.9: 1 = alike, 0.2 = one "
          "column carries the group)", ("group_elasticnet", "group_l1"), "group_evenness", "better",
          (("group_elasticnet", "group_l1"),), datasets=("correlated_groups",),
          also=("group_retention", "noise_retention", "test_r2")),
    Claim("C3", "a proper initialization (Xavier, He) speeds up convergence against a naive N(0, 0.01^2)",
          ("init_kaiming_uniform", "init_xavier_uniform", "init_normal"), "train_loss_final", "better",
          (("init_kaiming_uniform", "init_normal"), ("init_xavier_uniform", "init_normal")), sign=-1.0),
    Claim("C4", "the compression method (PCA, truncated SVD, random projection) matters at the same "
          "number of components", ("compress_pca", "compress_svd", "compress_random_projection"),
          "test_accuracy", "differ",
          (("compress_pca", "compress_svd"), ("compress_pca", "compress_random_projection"),
           ("compress_svd", "compress_random_projection")), also=("fit_seconds",)),
    Claim("C5", "sparse models generalize better: a smaller train-test gap at lower density",
          ("mlp_gmp10", "mlp_dense"), "generalization_gap", "better", (("mlp_gmp10", "mlp_dense"),),
          sign=-1.0, also=("density", "test_accuracy")),
    Claim("C6", "about 1/10 of the parameters at accuracy close to dense (within 1 point), ~90% of "
          "the storage saved", ("mlp_gmp10", "mlp_dense"), "test_accuracy", "within",
          (("mlp_dense", "mlp_gmp10"),), margin=0.01, also=("density", "bytes_sparse"),
          condition=("mlp_gmp10", _storage_saved)),
    Claim("C7", "mini-batch training reaches a given accuracy sooner than full-batch gradient descent "
          "(read as: a lower validation loss after the same training time)",
          ("minibatch", "fullbatch"), "val_loss_at_equal_time", "better", (("minibatch", "fullbatch"),),
          sign=-1.0, also=("epochs_at_equal_time", "equal_time_seconds")),
    Claim("C8", "dropout and batch normalization improve generalization of the network",
          ("mlp_dropout", "mlp_batchnorm", "mlp_dense"), "test_accuracy", "better",
          (("mlp_dropout", "mlp_dense"), ("mlp_batchnorm", "mlp_dense")), also=("generalization_gap",)),
)


def preset_of(study: StudyConfig) -> Preset:
    return PRESETS[study.preset]


def seeds_of(study: StudyConfig) -> list[int]:
    preset = preset_of(study)
    return list(range(preset.seeds or study.seeds))


def datasets_of(study: StudyConfig) -> tuple[str, ...]:
    return preset_of(study).datasets or tuple(study.datasets)


def plan(study: StudyConfig, available: Callable[[str], bool]) -> list[tuple[str, str]]:
    """(dataset, setting) pairs to train, each over every seed; datasets that are not there
    (Fashion-MNIST without its files) are left out."""
    pairs: list[tuple[str, str]] = []
    for claim in CLAIMS:
        for dataset in claim.datasets or datasets_of(study):
            if not available(dataset):
                continue
            pairs += [(dataset, s) for s in claim.settings if (dataset, s) not in pairs]
    return pairs
