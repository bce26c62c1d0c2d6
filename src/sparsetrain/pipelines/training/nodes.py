"""Training: build the configured network, penalty and pruner, and fit them on the train split."""

from __future__ import annotations

from torch import nn

from sparsetrain.config import ModelConfig, SparsityConfig, TrainingConfig
from sparsetrain.core.data import DatasetInfo, Splits
from sparsetrain.core.training import History, log_progress
from sparsetrain.logs import epoch_progress
from sparsetrain.recipe import train_network


def train_model(
    model_input: Splits,
    dataset_info: DatasetInfo,
    model: ModelConfig,
    sparsity: SparsityConfig,
    training: TrainingConfig,
) -> tuple[nn.Module, History]:
    """Fit on the train split, early-stop on the validation split; the test split stays unseen.
    Progress: a bar on a terminal, a line per epoch in logs (``training.verbose=false``: none)."""
    if not training.verbose:
        return train_network(model_input, dataset_info, model, sparsity, training, callbacks=[])
    with epoch_progress(training.epochs, log_progress) as progress:
        return train_network(model_input, dataset_info, model, sparsity, training, callbacks=[progress])
