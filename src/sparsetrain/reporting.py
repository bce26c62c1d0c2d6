"""Figures a person would rather look at than read: confusion matrix, curves, weight masks,
per-layer density.

Pure matplotlib (Agg backend, no screen needed); each function returns a Figure for the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > matrix.max() / 2 else "black")
    fig.colorbar(im, ax=ax)
    ax.set_title("confusion matrix (test split)")
    fig.tight_layout()
    return fig


def training_curves_figure(
    train_loss: Sequence[float], val_loss: Sequence[float], density: Sequence[float]
) -> Figure:
    fig, (loss_ax, density_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(train_loss) + 1)
    loss_ax.plot(epochs, train_loss, label="train")
    if len(val_loss):
        loss_ax.plot(epochs[: len(val_loss)], val_loss, label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    density_ax.plot(epochs, density, color="tab:green")
    density_ax.set_xlabel("epoch")
    density_ax.set_ylabel("density of prunable weights")
    density_ax.set_ylim(0, 1.05)
    fig.tight_layout()
    return fig


def weight_mask_figure(first_layer: np.ndarray, image_shape: Sequence[int], max_units: int = 16) -> Figure:
    """Nonzero pattern of the first layer's weights, one small image per output unit, plus the
    union over units: which pixels the model still reads."""
    height, width = image_shape[-2], image_shape[-1]
    units = first_layer[:max_units]
    cols = min(len(units) + 1, 9)
    rows = int(np.ceil((len(units) + 1) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.5 * rows), squeeze=False)
    used = (first_layer != 0).any(axis=0).reshape(height, width)
    panels = [("any unit", used)]
    panels += [(f"unit {i}", (u != 0).reshape(height, width)) for i, u in enumerate(units)]
    for ax, (title, mask) in zip(axes.flat, panels):
        ax.imshow(mask, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"nonzero input weights ({used.mean():.0%} of pixels used)", fontsize=9)
    fig.tight_layout()
    return fig


def layer_density_figure(
    names: Sequence[str], kinds: Sequence[str], nonzeros: Sequence[int], totals: Sequence[int]
) -> Figure:
    """One bar per prunable layer: its density, labelled with ``nonzeros / weights``; the dashed
    line is the density over all prunable layers together."""
    densities = [n / t if t else 0.0 for n, t in zip(nonzeros, totals)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(names) + 2.0), 4))
    positions = np.arange(len(names))
    bars = ax.bar(positions, densities, color="tab:blue", width=0.6)
    for bar, nonzero, total in zip(bars, nonzeros, totals):
        ax.annotate(f"{nonzero:,} / {total:,}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    overall = sum(nonzeros) / sum(totals) if sum(totals) else 0.0
    ax.axhline(overall, color="black", linestyle="--", linewidth=0.8, label=f"all layers: {overall:.1%}")
    ax.set_xticks(positions, [f"{name}\n{kind}" for name, kind in zip(names, kinds)], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("density (nonzero / weights)")
    ax.set_title("density per prunable layer (labels: nonzero / weights)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig
