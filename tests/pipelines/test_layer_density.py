"""Per-layer complexity (issue 12, part 4) in every evaluation: the metrics density.<layer> and
nonzeros.<layer>, and the evaluation plot plots/layer_density.png. Real digits, real training."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from digits_data import standardized_digits

from sparsetrain.config import parse_config
from sparsetrain.core.data import DatasetInfo, Splits, load_digits_dataset
from sparsetrain.core.metrics import layer_sparsity
from sparsetrain.core.models import prunable_weights
from sparsetrain.pipelines.evaluation.nodes import plot_evaluation
from sparsetrain.recipe import train_network
from sparsetrain.scoring import evaluate_network

FAST = {"epochs": 2, "verbose": False}


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained two epochs on standardized digits, with L1."""
    splits = Splits(*standardized_digits(seed=0))
    info = DatasetInfo.of(load_digits_dataset())
    cfg = parse_config({"model": {"kind": "mlp", "hidden": [16]}, "training": FAST})
    network, history = train_network(splits, info, cfg.model, cfg.sparsity, cfg.training)
    return network, splits, info, history


def test_every_evaluation_logs_the_layer_metrics(trained):
    network, splits, info, history = trained
    metrics = evaluate_network(network, splits, info, history, speed=False)
    for i in (0, 1):
        assert 0 < metrics[f"density.layer{i}"] <= 1
        weight = prunable_weights(network)[i]
        assert metrics[f"nonzeros.layer{i}"] == int(torch.count_nonzero(weight))
    assert "density.layer2" not in metrics


def test_layer_density_plot_has_a_bar_per_layer_labelled_with_nonzeros(trained):
    network, splits, info, history = trained
    figures = plot_evaluation(network, splits, info, history)
    figure = figures["layer_density.png"]
    try:
        ax = figure.axes[0]
        layers = layer_sparsity(network)
        heights = [bar.get_height() for bar in ax.patches]
        assert heights == pytest.approx([layer.density for layer in layers])
        labels = [text.get_text() for text in ax.texts]
        assert labels == [f"{layer.nonzeros:,} / {layer.total:,}" for layer in layers]
        ticks = [tick.get_text() for tick in ax.get_xticklabels()]
        assert ticks == ["layer0\nLinear 64->16", "layer1\nLinear 16->10"]
        assert np.isfinite(heights).all()
    finally:
        for fig in figures.values():
            plt.close(fig)
