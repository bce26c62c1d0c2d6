"""The regularization path's figures: coefficients, CV metric and nonzeros against the strength.

Pure matplotlib (Agg backend); each function returns a Figure. The strength axis is logarithmic
and increases to the right, as glmnet draws it: the sparsest model (every weight zero at
``lambda_max``) is on the right.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

CHOSEN, BEST, ONE_SE = "tab:red", "tab:blue", "tab:orange"


def _mark(ax: Axes, strengths: np.ndarray, index: int, color: str, label: str, style: str = "--") -> None:
    label = f"{label} {strengths[index]:.3g}"
    ax.axvline(strengths[index], color=color, linestyle=style, linewidth=1.2, label=label)


def coefficients_figure(
    strengths: np.ndarray,
    coef: np.ndarray,
    feature_names: Sequence[str],
    chosen: int,
    rule: str,
    n_labels: int = 8,
) -> Figure:
    """One curve per feature: its weight (one output) or the 2-norm of its weights over the
    outputs (several classes, glmnet's ``type.coef = "2norm"``); the chosen strength marked."""
    fig, ax = plt.subplots(figsize=(8, 5))
    n_outputs = coef.shape[1]
    curves = coef[:, 0, :] if n_outputs == 1 else np.linalg.norm(coef, axis=1)  # (n_strengths, n_features)
    last = np.abs(curves[-1])
    labelled = {int(j) for j in np.argsort(-last, kind="stable")[:n_labels] if last[j] > 0}
    for j in range(curves.shape[1]):
        if j in labelled:
            ax.plot(strengths, curves[:, j], linewidth=1.4, label=str(feature_names[j]))
        else:
            ax.plot(strengths, curves[:, j], color="0.65", linewidth=0.7, alpha=0.7)
    _mark(ax, strengths, chosen, CHOSEN, f"chosen ({rule})")
    ax.set_xscale("log")
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel("strength (log scale)")
    ax.set_ylabel("coefficient" if n_outputs == 1 else f"|w_j|_2 over the {n_outputs} classes")
    ax.set_title("coefficient paths (largest at the weakest strength labelled)")
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    return fig


def metric_figure(
    strengths: np.ndarray,
    mean: np.ndarray,
    sem: np.ndarray,
    metric: str,
    n_folds: int,
    best: int,
    one_se: int,
    chosen: int,
    maximize: bool,
) -> Figure:
    """The CV metric +- one standard error at every strength, the min and 1-SE strengths and the
    1-SE bound marked: the whole path (left) and the strengths near the best (right), where the
    choice is made."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    bound = mean[best] - sem[best] if maximize else mean[best] + sem[best]
    gap = abs(mean - mean[best])
    near = np.flatnonzero(gap <= max(6 * sem[best], 1e-12))
    zoom = slice(max(near.min() - 1, 0), min(near.max() + 2, len(strengths)))
    for ax, rows, title in ((axes[0], slice(None), "the whole path"), (axes[1], zoom, "near the best")):
        ax.errorbar(strengths[rows], mean[rows], yerr=sem[rows], fmt="o", color="tab:gray", markersize=3,
                    capsize=2, linewidth=0.8, markerfacecolor="tab:red", markeredgecolor="tab:red",
                    label=f"{n_folds}-fold CV mean +- SE")
        side = "best - 1 SE" if maximize else "best + 1 SE"
        ax.axhline(bound, color=ONE_SE, linestyle=":", linewidth=1.0, label=f"{side} = {bound:.4g}")
        _mark(ax, strengths, best, BEST, "min")
        _mark(ax, strengths, one_se, ONE_SE, "1se", style="-.")
        ax.plot([strengths[chosen]], [mean[chosen]], marker="*", markersize=14, color=CHOSEN,
                linestyle="none", label=f"chosen: {metric} {mean[chosen]:.4g}")
        ax.set_xscale("log")
        ax.set_xlabel("strength (log scale)")
        ax.set_ylabel(f"CV {metric}")
        ax.set_title(f"cross-validated {metric}: {title}")
    axes[1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def nonzeros_figure(
    strengths: np.ndarray,
    nonzeros: np.ndarray,
    nonzero_features: np.ndarray,
    n_features: int,
    chosen: int,
    rule: str,
) -> Figure:
    """Nonzero weights (left axis) and features in use (right axis) along the path."""
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(strengths, nonzeros, marker="o", markersize=3, color="tab:green", label="nonzero weights")
    ax.set_xscale("log")
    ax.set_xlabel("strength (log scale)")
    ax.set_ylabel("nonzero weights", color="tab:green")
    twin = ax.twinx()
    twin.plot(strengths, nonzero_features, marker="s", markersize=3, color="tab:purple",
              label="features used")
    twin.set_ylabel(f"features used (of {n_features})", color="tab:purple")
    twin.set_ylim(0, n_features * 1.05)
    _mark(ax, strengths, chosen, CHOSEN, f"chosen ({rule})")
    lines = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8, loc="upper right")
    ax.set_title(f"sparsity along the path: {int(nonzeros[chosen])} weights, "
                 f"{int(nonzero_features[chosen])} features at the chosen strength")
    fig.tight_layout()
    return fig
