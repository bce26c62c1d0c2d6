"""Greedy forward selection of the input features of a linear model.

Start from the intercept-only model; at each step add the one input feature that most improves
the fit on the training split, refit on the selected features, and score the refit on the
validation split. Two selectors with one contract (:class:`Selector`), one driver
(:func:`forward_select`):

- ``squared`` (least squares, regression): **exact forward stepwise** (Hastie, Tibshirani &
  Friedman, *The Elements of Statistical Learning*, 3.3.2; "orthogonal least squares"). The
  feature that most lowers the training residual sum of squares once the active set is refit is
  the one maximizing ``(r' q_j)^2 / |q_j|^2``, with ``r`` the residual and ``q_j`` column ``j``
  made orthogonal to the active columns. Modified Gram-Schmidt keeps every ``q_j`` current at
  ``O(n d)`` per step, the cost of one orthogonal-matching-pursuit step, so there is no reason
  to settle for OMP's ranking by ``|x_j' r|`` (which ignores what the active set already
  explains); the refit is exact (a triangular solve on the Gram-Schmidt factors).
- ``multinomial`` (classification, any number of classes): **grafting** (Perkins, Lacker &
  Theiler 2003, "Grafting: fast, incremental feature selection by gradient descent in function
  space", JMLR 3). Exact stepwise would refit ``d`` models per step; grafting adds the feature
  whose group of class weights ``W[:, j]`` has the largest loss gradient (Euclidean norm over the
  classes, per unit of the column's standard deviation, so the choice does not depend on the
  feature's units): to first order, how fast the loss falls when that column is freed. The
  active set is then refit by the project's exact solver
  (:func:`~sparsetrain.core.solvers.solve_linear`, multinomial loss), warm-started from the
  previous weights with the new column at zero. The refits carry a tiny ridge (``ridge``,
  ``strength / 2 |W|^2``, default ``1e-4`` on standardized features) so that they stay bounded
  when the selected features separate the training classes; it is part of the selection only.

Stopping: with ``max_features`` set, exactly that many features are added (fewer only when no
column is left that adds anything: constant or collinear columns never enter). With
``max_features=None`` the validation loss (mean squared error, or mean cross-entropy) chooses:
the search stops after ``patience`` (default 3) steps in a row without a new best validation
loss, and the features up to the best step are kept.

What is returned is the selected columns only; the final model is the caller's to train on them.
The recipe refits the run's own network, penalty, pruner and training loop on those columns
(:func:`restrict_splits`), then :func:`embed_columns` widens the network back to every input with
exact zeros, and :func:`widen_callbacks` / :func:`widen_history` report densities at full width.
The run's penalty may still zero a selected column (``sparsity.penalty: none`` refits plainly).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch
from scipy.linalg import solve_triangular
from threadpoolctl import threadpool_limits
from torch import nn

from sparsetrain.core.data import Splits
from sparsetrain.core.models import build_model
from sparsetrain.core.penalties import L2
from sparsetrain.core.solvers import solve_linear
from sparsetrain.core.training import EpochLog, History
from sparsetrain.errors import SparsetrainError

__all__ = [
    "PATIENCE",
    "SelectionResult",
    "SelectionStep",
    "embed_columns",
    "f1_of",
    "forward_select",
    "log_step",
    "restrict_splits",
    "widen_callbacks",
    "widen_history",
]

logger = logging.getLogger(__name__)

PATIENCE = 3  # max_features=None: steps without a new best validation loss before stopping
_COLLINEAR = 1e-10  # a column whose part orthogonal to the active set is below this share is spent


@dataclass(frozen=True)
class SelectionStep:
    """One step of the search: the feature added and the refit's losses and metric.

    ``score`` is the selector's criterion for the added feature (the drop in training RSS per row
    for least squares; the scaled gradient norm for grafting). ``val_loss`` / ``val_metric`` are
    None when the validation split is empty; ``metric`` names the metric (``val_r2``,
    ``val_accuracy``); ``max_features`` is the search's limit (None: chosen on validation)."""

    step: int
    feature: int
    name: str
    score: float
    train_loss: float
    val_loss: float | None
    val_metric: float | None
    metric: str
    max_features: int | None


@dataclass(frozen=True)
class SelectionResult:
    """The selected columns in the order they entered, every step taken (with ``max_features``
    None the search runs ``patience`` steps past the kept prefix), and why it stopped."""

    features: tuple[int, ...]
    steps: tuple[SelectionStep, ...]
    method: str
    stopped: str


class Selector(Protocol):
    """A greedy path over the columns of one training split."""

    method: str
    metric: str

    def scores(self) -> np.ndarray:
        """Criterion per column (larger is better); ``-inf`` for columns that may not enter."""
        ...

    def add(self, j: int) -> None:
        """Put column ``j`` in the active set and refit on it."""
        ...

    def train_loss(self) -> float: ...

    def val_loss_and_metric(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]: ...


class _Stepwise:
    """Exact forward stepwise least squares by modified Gram-Schmidt (see the module docstring)."""

    method = "forward stepwise (least squares)"
    metric = "val_r2"

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.mean_x, self.mean_y = X.mean(0), float(y.mean())
        self.Q = X - self.mean_x  # every column kept orthogonal to the active ones (n x d)
        self.r = y - self.mean_y  # the residual of the current fit
        self.norm0 = (self.Q * self.Q).sum(0)
        self.n = X.shape[0]
        self.active: list[int] = []
        self.R: list[np.ndarray] = []  # rows of the Gram-Schmidt factor, one per step (length d)
        self.z: list[float] = []  # q_t' y, one per step
        self.coef = np.zeros(0)

    def scores(self) -> np.ndarray:
        norms = (self.Q * self.Q).sum(0)
        live = norms > _COLLINEAR * self.norm0
        live[self.active] = False
        out = np.full(norms.shape, -np.inf)
        out[live] = (self.Q[:, live].T @ self.r) ** 2 / norms[live] / self.n
        return out

    def add(self, j: int) -> None:
        q = self.Q[:, j] / math.sqrt(float(self.Q[:, j] @ self.Q[:, j]))
        proj = q @ self.Q  # R entries: q_t' (the part of every column not yet explained)
        proj[j] = float(q @ self.Q[:, j])
        self.Q -= np.outer(q, proj)
        self.Q[:, j] = 0.0
        zt = float(q @ self.r)
        self.r = self.r - zt * q
        self.active.append(j)
        self.R.append(proj)
        self.z.append(zt)
        R = np.stack([row[self.active] for row in self.R])  # upper triangular, in entry order
        self.coef = solve_triangular(R, np.asarray(self.z), lower=False, check_finite=False)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (X[:, self.active] - self.mean_x[self.active]) @ self.coef + self.mean_y

    def train_loss(self) -> float:
        return float(self.r @ self.r) / self.n

    def val_loss_and_metric(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        err = y - self.predict(X)
        mse = float(err @ err) / len(y)
        total = float(((y - y.mean()) ** 2).sum())
        return mse, (1.0 - float(err @ err) / total) if total > 0 else 0.0


class _Grafting:
    """Gradient-based forward selection for the multinomial loss (see the module docstring)."""

    method = "grafting (multinomial)"
    metric = "val_accuracy"

    def __init__(self, X: np.ndarray, y: np.ndarray, ridge: float, tol: float, max_iter: int) -> None:
        self.classes, codes = np.unique(y, return_inverse=True)
        if len(self.classes) < 2:
            raise SparsetrainError(
                f"the training split has one class ({self.classes[0]}); a classifier needs two or more"
            )
        self.X, self.y, self.n = X, y, X.shape[0]
        self.T = np.eye(len(self.classes))[codes.reshape(-1)]
        self.scale = X.std(0)
        self.penalty, self.tol, self.max_iter = L2(ridge), tol, max_iter
        self.active: list[int] = []
        self.W = np.zeros((len(self.classes), 0))
        logp = np.log(self.T.mean(0))
        self.b = logp - logp.mean()

    def _proba(self, X: np.ndarray) -> np.ndarray:
        Z = X[:, self.active] @ self.W.T + self.b
        return torch.softmax(torch.from_numpy(Z), 1).numpy()

    def scores(self) -> np.ndarray:
        G = (self._proba(self.X) - self.T).T @ self.X / self.n  # d loss / d W, k x d
        live = self.scale > 0
        live[self.active] = False
        out = np.full(self.X.shape[1], -np.inf)
        out[live] = np.linalg.norm(G[:, live], axis=0) / self.scale[live]
        return out

    def add(self, j: int) -> None:
        self.active.append(j)
        coef0 = np.concatenate([self.W, np.zeros((self.W.shape[0], 1))], 1)
        fit = solve_linear(
            self.X[:, self.active], self.y, loss="multinomial", penalty=self.penalty,
            tol=self.tol, max_iter=self.max_iter, coef0=coef0, intercept0=self.b,
        )
        self.W, self.b = fit.coef, fit.intercept

    def _cross_entropy(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        P = self._proba(X)
        idx = np.searchsorted(self.classes, y)
        known = (idx < len(self.classes)) & (self.classes[np.minimum(idx, len(self.classes) - 1)] == y)
        p_true = np.where(known, P[np.arange(len(y)), np.minimum(idx, len(self.classes) - 1)], 0.0)
        loss = float(-np.log(np.maximum(p_true, 1e-300)).mean())
        accuracy = float((known & (P.argmax(1) == idx)).mean())
        return loss, accuracy

    def train_loss(self) -> float:
        return self._cross_entropy(self.X, self.y)[0]

    def val_loss_and_metric(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        return self._cross_entropy(X, y)


def _selector(task: str, X: np.ndarray, y: np.ndarray, ridge: float, tol: float, max_iter: int) -> Selector:
    if task == "regression":
        return _Stepwise(X, np.asarray(y, dtype=np.float64).reshape(-1))
    if task == "classification":
        return _Grafting(X, np.asarray(y).reshape(-1), ridge, tol, max_iter)
    raise SparsetrainError(f"data.task '{task}' is unknown; choose classification or regression")


def forward_select(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    *,
    task: str,
    max_features: int | None = None,
    patience: int = PATIENCE,
    feature_names: Sequence[str] | None = None,
    ridge: float = 1e-4,
    tol: float = 1e-6,
    max_iter: int = 5000,
    on_step: Callable[[SelectionStep], None] | None = None,
    n_threads: int | None = 1,
) -> SelectionResult:
    """Greedy forward selection of columns of ``X_train`` (method and stopping rule in the module
    docstring). Deterministic: ties go to the lowest column index, and the solves run in float64
    on the CPU with ``n_threads`` BLAS threads (1 by default, as the solvers do)."""
    X = np.asarray(X_train, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise SparsetrainError(f"forward selection needs a non-empty 2-D training split, got shape {X.shape}")
    d = X.shape[1]
    if max_features is not None and not 1 <= max_features <= d:
        raise SparsetrainError(
            f"sparsity.max_features={max_features} but the model has {d} input features; "
            f"set sparsity.max_features between 1 and {d}, or null to choose on the validation split"
        )
    if not (isinstance(patience, int) and patience >= 1):
        raise SparsetrainError(f"patience must be a positive integer, got {patience!r}")
    has_val = X_val is not None and len(X_val) > 0
    if max_features is None and not has_val:
        raise SparsetrainError(
            "sparsity.max_features=null chooses the number of features on the validation split, which is "
            "empty; set data.val_size > 0 or set sparsity.max_features"
        )
    Xv = np.asarray(X_val, dtype=np.float64) if has_val else None
    yv = np.asarray(y_val).reshape(-1) if has_val else None
    if has_val and task == "regression":
        yv = yv.astype(np.float64)
    names = list(feature_names) if feature_names is not None and len(feature_names) == d else None
    limit = max_features if max_features is not None else d
    steps: list[SelectionStep] = []
    best, best_at, stopped = math.inf, 0, "max_features" if max_features is not None else "all features"
    with threadpool_limits(limits=n_threads) if n_threads is not None else nullcontext():
        sel = _selector(task, X, y_train, ridge, tol, max_iter)
        for k in range(1, limit + 1):
            scores = sel.scores()
            j = int(np.argmax(scores))
            if not np.isfinite(scores[j]):
                stopped = "no column left that adds anything"
                break
            sel.add(j)
            val_loss, val_metric = sel.val_loss_and_metric(Xv, yv) if has_val else (None, None)
            step = SelectionStep(
                k, j, names[j] if names else f"feature {j}", float(scores[j]), sel.train_loss(),
                val_loss, val_metric, sel.metric, max_features,
            )
            steps.append(step)
            if on_step is not None:
                on_step(step)
            if max_features is None:
                if val_loss < best:
                    best, best_at = val_loss, k
                elif k - best_at >= patience:
                    stopped = f"no better validation loss for {patience} steps"
                    break
    keep = len(steps) if max_features is not None else best_at
    return SelectionResult(tuple(s.feature for s in steps[:keep]), tuple(steps), sel.method, stopped)


def log_step(step: SelectionStep) -> None:
    """The default progress line: one per step."""
    val = ""
    if step.val_loss is not None:
        val = f" val_loss {step.val_loss:.4f} {step.metric} {step.val_metric:.4f}"
    of = "" if step.max_features is None else f"/{step.max_features}"
    logger.info(
        "forward selection %d%s: + %s (column %d, score %.4g) train_loss %.4f%s",
        step.step, of, step.name, step.feature, step.score, step.train_loss, val,
    )


def restrict_splits(splits: Splits, features: Sequence[int]) -> Splits:
    """Every split with only the selected columns, in the given order."""
    cols = np.asarray(features, dtype=np.int64)
    return replace(
        splits, X_train=splits.X_train[:, cols], X_val=splits.X_val[:, cols], X_test=splits.X_test[:, cols]
    )


def embed_columns(network: nn.Module, features: Sequence[int], n_features: int) -> nn.Sequential:
    """The usual linear network over all ``n_features`` inputs whose weights of the unselected
    columns are exactly zero: ``network`` (a linear model over ``features``, in that order)
    widened back, on its device and in its dtype, in eval mode."""
    layers = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if len(layers) != 1 or layers[0].in_features != len(features):
        raise SparsetrainError(
            "sparsity.selection needs a linear model (one Linear layer over the selected features); "
            "set model.kind=linear"
        )
    small = layers[0]
    full = build_model("linear", n_features, small.out_features)
    full.arch = {**getattr(network, "arch", full.arch), "n_features": n_features}  # what export rebuilds
    full = full.to(device=small.weight.device, dtype=small.weight.dtype)
    wide = [m for m in full.modules() if isinstance(m, nn.Linear)][0]
    with torch.no_grad():
        wide.weight.zero_()
        cols = torch.as_tensor(list(features), dtype=torch.long, device=small.weight.device)
        wide.weight[:, cols] = small.weight
        if small.bias is not None:
            wide.bias.copy_(small.bias)
        else:
            wide.bias.zero_()
    return full.eval()


@dataclass(frozen=True)
class WidenedDensity:
    """A training callback of the narrow refit that reports the density of the full-width
    network: the narrow one's density times ``share``, the selected fraction of the input columns
    (exact for a linear model; picklable, unlike a closure)."""

    callback: Callable[[EpochLog], None]
    share: float

    def __call__(self, log: EpochLog) -> None:
        self.callback(replace(log, density=log.density * self.share))


def widen_callbacks(callbacks: Sequence[Callable[[EpochLog], None]], share: float) -> list[WidenedDensity]:
    """Every callback of the narrow refit, seeing the full network's density (see WidenedDensity)."""
    return [WidenedDensity(c, share) for c in callbacks]


def widen_history(history: History, share: float) -> History:
    """The narrow refit's history with the full network's per-epoch density."""
    return replace(history, density=[d * share for d in history.density])


def f1_of(precision: float, recall: float) -> float:
    """The harmonic mean of precision and recall (F1); 0 when both are 0."""
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)
