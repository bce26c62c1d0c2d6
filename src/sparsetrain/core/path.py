"""Regularization paths of a linear model, and the strength chosen by cross-validation.

Pure numpy / torch / scikit-learn over :mod:`sparsetrain.core.solvers` (the exact full-batch
solver): no Kedro, MLflow or config. The path follows glmnet's ``cv.glmnet``:

- ``lambda_max``: the smallest strength at which every weight is zero, from the KKT condition at
  ``w = 0`` (the intercept at its optimum): ``|grad_j| <= strength`` for every weight under L1,
  ``|grad_g|_2 <= strength sqrt(|g|)`` for every group under the group lasso, and
  ``|grad_j| <= strength * l1_ratio`` under the elastic net (the ridge part has zero gradient at
  zero), i.e. ``|grad|_inf / l1_ratio``;
- ``n`` strengths log-spaced from ``lambda_max`` down to ``min_ratio * lambda_max``
  (:func:`strength_grid`), solved in decreasing order, each warm-started from the previous
  solution (:func:`fit_path`);
- K-fold cross-validation at the same strengths, the preprocessing (standardizer, reducer)
  refit on each fold's training rows only (:func:`cross_validate_path`);
- the choice (:func:`choose`): ``min``, the best mean CV metric, or ``1se``, the largest strength
  whose mean is within one standard error of the best (cv.glmnet's ``lambda.1se``).

Penalties without a path (``none``, ``l2``, ``l0``, ridge-only elastic net, group lasso on hidden
units) are refused by :func:`path_penalty`: no finite strength zeroes every weight of a convex L2
problem, L0 is not convex (``w = 0`` is a local minimum at every strength, so no strength is
certified from the gradient at zero), and a linear model has no hidden unit to group.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from sparsetrain.core.compression import fit_reducer, transform
from sparsetrain.core.data import Standardizer
from sparsetrain.core.models import build_model
from sparsetrain.core.penalties import PENALTIES, Penalty, make_penalty
from sparsetrain.core.solvers import SolverResult, lasso_path, strength_max
from sparsetrain.errors import SparsetrainError

__all__ = [
    "PATH_PENALTIES",
    "Choice",
    "CVPath",
    "Path",
    "Preprocess",
    "choose",
    "cross_validate_path",
    "fit_fold",
    "fit_path",
    "lambda_max",
    "loss_for",
    "metric_for",
    "one_se_index",
    "path_penalty",
    "score",
    "strength_grid",
    "to_network",
]

PenaltyFactory = Callable[[float], Penalty]
Rule = Literal["min", "1se"]
PATH_PENALTIES = ("l1", "elasticnet", "group_lasso")


# ---------------------------------------------------------------------------------------------
# The problem: which loss, which penalty family, which metric.


def loss_for(task: str, n_classes: int | None) -> str:
    """The solver's loss for a task: squared (regression), logistic (two classes), multinomial."""
    if task == "regression":
        return "squared"
    return "logistic" if n_classes == 2 else "multinomial"


def metric_for(task: str) -> tuple[str, bool]:
    """The CV metric of a task and whether larger is better: accuracy, or rmse (smaller)."""
    return ("rmse", False) if task == "regression" else ("accuracy", True)


@dataclass(frozen=True)
class _Family:
    """``strength -> Penalty`` for one penalty with its other keys fixed (a picklable factory)."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def __call__(self, strength: float) -> Penalty:
        return make_penalty(self.name, strength, **dict(self.options))


def path_penalty(name: str, l1_ratio: float = 0.5, groups: str = "input") -> PenaltyFactory:
    """The penalty family of a path, or a one-line error naming the key when it has none."""
    if name not in PENALTIES:
        raise SparsetrainError(
            f"sparsity.penalty '{name}' is unknown; choose one of {', '.join(PATH_PENALTIES)}"
        )
    if name not in PATH_PENALTIES:
        why = {
            "none": "has no strength to vary",
            "l2": "shrinks weights but zeroes none at any finite strength",
            "l0": "is not convex: no strength is certified to zero every weight",
        }.get(name, "has no regularization path")
        raise SparsetrainError(
            f"sparsity.penalty '{name}' {why}; a path needs one of {', '.join(PATH_PENALTIES)}"
        )
    if name == "elasticnet" and not l1_ratio > 0:
        raise SparsetrainError(
            "sparsity.l1_ratio=0 makes elasticnet a ridge penalty, which zeroes no weight at any "
            "finite strength; set sparsity.l1_ratio > 0 for a path"
        )
    if name == "group_lasso" and groups != "input":
        raise SparsetrainError(
            f"sparsity.groups '{groups}' groups hidden units, which a linear model has none of; "
            "set sparsity.groups=input for a path"
        )
    options = {"elasticnet": (("l1_ratio", float(l1_ratio)),), "group_lasso": (("groups", groups),)}
    return _Family(name, options.get(name, ()))


def lambda_max(X, y, *, loss: str, penalty: PenaltyFactory, fit_intercept: bool = True) -> float:
    """The smallest strength at which every weight is zero (the intercept at its optimum)."""
    value = strength_max(X, y, loss, fit_intercept=fit_intercept, penalty=penalty(0.0))
    if not (math.isfinite(value) and value > 0):
        raise SparsetrainError(
            f"the gradient at zero weights gives lambda_max={value:g}: the target does not depend on "
            "the features; check data.target"
        )
    return value


def strength_grid(lambda_max: float, n_strengths: int, min_ratio: float) -> np.ndarray:
    """``n_strengths`` strengths log-spaced from ``lambda_max`` down to ``min_ratio * lambda_max``."""
    if not (isinstance(n_strengths, (int, np.integer)) and n_strengths >= 2):
        raise SparsetrainError(f"path.n_strengths must be an integer >= 2, got {n_strengths!r}")
    if not 0 < min_ratio < 1:
        raise SparsetrainError(f"path.min_ratio must be in (0, 1), got {min_ratio!r}")
    if not (math.isfinite(lambda_max) and lambda_max > 0):
        raise SparsetrainError(f"lambda_max must be a positive number, got {lambda_max!r}")
    grid = np.geomspace(lambda_max, min_ratio * lambda_max, int(n_strengths))
    grid[0] = lambda_max  # exact, not a rounding away
    return grid


# ---------------------------------------------------------------------------------------------
# A path: one warm-started solve per strength.


@dataclass(frozen=True)
class Path:
    """Solutions along decreasing ``strengths``: ``coef`` is ``(n_strengths, n_outputs,
    n_features)``, ``intercept`` ``(n_strengths, n_outputs)``; ``seconds`` per strength."""

    strengths: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    seconds: np.ndarray
    kkt: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray

    @property
    def nonzeros(self) -> np.ndarray:
        """Nonzero weights at each strength."""
        return np.count_nonzero(self.coef, axis=(1, 2))

    @property
    def nonzero_features(self) -> np.ndarray:
        """Features with a nonzero weight for any output, at each strength."""
        return (self.coef != 0).any(axis=1).sum(axis=1)

    def decision(self, X: np.ndarray) -> np.ndarray:
        """``X @ coef.T + intercept`` at every strength: ``(n_strengths, n_rows, n_outputs)``."""
        X = np.asarray(X, dtype=np.float64)
        return np.einsum("nd,skd->snk", X, self.coef) + self.intercept[:, None, :]


def _stack(strengths: Sequence[float], results: Sequence[SolverResult]) -> Path:
    return Path(
        strengths=np.asarray(strengths, dtype=np.float64),
        coef=np.stack([r.coef for r in results]),
        intercept=np.stack([r.intercept for r in results]),
        seconds=np.array([r.seconds for r in results]),
        kkt=np.array([r.kkt for r in results]),
        n_iter=np.array([r.n_iter for r in results]),
        converged=np.array([r.converged for r in results]),
    )


def fit_path(
    X,
    y,
    strengths: Sequence[float],
    *,
    loss: str,
    penalty: PenaltyFactory,
    tol: float = 1e-6,
    max_iter: int = 5000,
    fit_intercept: bool = True,
) -> Path:
    """Solve at each of the decreasing ``strengths``, each warm-started from the previous solution
    (with the sequential strong rule's first working set, :func:`~sparsetrain.core.solvers.lasso_path`)."""
    strengths = np.asarray(strengths, dtype=np.float64)
    if len(strengths) and np.any(np.diff(strengths) > 0):
        raise SparsetrainError("a warm-started path needs decreasing strengths")
    results = lasso_path(
        X, y, strengths, loss=loss, penalty_factory=penalty, fit_intercept=fit_intercept, tol=tol,
        max_iter=max_iter,
    )
    return _stack(strengths, results)


def score(path: Path, X: np.ndarray, y: np.ndarray, loss: str) -> np.ndarray:
    """The CV metric of every strength on rows ``(X, y)``: accuracy for a classifier (``y`` the
    class ids the path was fitted on), rmse for the squared loss."""
    Z = path.decision(X)
    y = np.asarray(y)
    if loss == "squared":
        return np.sqrt(((Z[:, :, 0] - y.astype(np.float64)[None, :]) ** 2).mean(axis=1))
    predicted = (Z[:, :, 0] > 0).astype(np.int64) if loss == "logistic" else Z.argmax(axis=2)
    return (predicted == y[None, :]).mean(axis=1)


# ---------------------------------------------------------------------------------------------
# Preprocessing refit on each fit's own rows.


@dataclass(frozen=True)
class Preprocess:
    """The recipe before the linear model: standardize, then reduce (``method`` and
    ``n_components`` as :func:`~sparsetrain.core.compression.fit_reducer` takes them)."""

    method: str = "none"
    n_components: int | float | None = None
    seed: int = 0

    def fit(self, X: np.ndarray) -> Fitted:
        standardizer = Standardizer().fit(X)
        reducer, summary = fit_reducer(self.method, self.n_components, standardizer.transform(X), self.seed)
        return Fitted(standardizer, reducer, summary)


@dataclass(frozen=True)
class Fitted:
    standardizer: Standardizer
    reducer: Any
    summary: dict[str, Any] = field(default_factory=dict)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = self.standardizer.transform(X)
        return X if self.summary.get("method", "none") == "none" else transform(self.reducer, X)


# ---------------------------------------------------------------------------------------------
# Cross-validation at fixed strengths.


@dataclass(frozen=True)
class CVPath:
    """``scores`` is ``(repeats, folds, n_strengths)``; ``seconds`` the path time of each fit."""

    strengths: np.ndarray
    scores: np.ndarray
    seconds: np.ndarray
    maximize: bool

    @property
    def mean(self) -> np.ndarray:
        """The CV metric at each strength, over every fold of every repeat."""
        return self.scores.mean(axis=(0, 1))

    @property
    def sem(self) -> np.ndarray:
        """Its standard error: across the folds of a repeat (as cv.glmnet), averaged over repeats.
        Pooling the folds of all repeats as if independent would understate it."""
        k = self.scores.shape[1]
        return (self.scores.std(axis=1, ddof=1) / math.sqrt(k)).mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        return self.scores.reshape(-1, self.scores.shape[2]).std(axis=0, ddof=1)


def fit_fold(
    X: np.ndarray,
    y: np.ndarray,
    fit_rows: np.ndarray,
    strengths: Sequence[float],
    *,
    loss: str,
    penalty: PenaltyFactory,
    preprocess: Preprocess = Preprocess(),
    tol: float = 1e-6,
    max_iter: int = 5000,
) -> tuple[Fitted, Path]:
    """One fold's fit: ``preprocess`` and the path fitted on the rows ``fit_rows`` only."""
    fitted = preprocess.fit(X[fit_rows])
    X_fit = fitted.transform(X[fit_rows])
    path = fit_path(X_fit, y[fit_rows], strengths, loss=loss, penalty=penalty, tol=tol, max_iter=max_iter)
    return fitted, path


def cross_validate_path(
    X: np.ndarray,
    y: np.ndarray,
    strengths: Sequence[float],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    repeats: int = 1,
    loss: str,
    penalty: PenaltyFactory,
    preprocess: Preprocess = Preprocess(),
    maximize: bool = True,
    tol: float = 1e-6,
    max_iter: int = 5000,
    on_fold: Callable[[int, float], None] | None = None,
) -> CVPath:
    """A path per fold at the same ``strengths``: ``preprocess`` refit on the fold's training rows
    only, the path fitted there, every strength scored on the held-out rows. ``folds`` lists the
    ``repeats x k`` (train rows, held-out rows) pairs, repeat by repeat (as
    :func:`~sparsetrain.core.cv.fold_indices` yields them); ``on_fold(i, seconds)`` after each."""
    folds = list(folds)
    if not folds or len(folds) % repeats:
        raise SparsetrainError(f"{len(folds)} folds do not make {repeats} repeats of equal size")
    scores, seconds = [], []
    for i, (fit_rows, held_rows) in enumerate(folds):
        t0 = time.perf_counter()
        fitted, path = fit_fold(
            X, y, fit_rows, strengths, loss=loss, penalty=penalty, preprocess=preprocess, tol=tol,
            max_iter=max_iter,
        )
        scores.append(score(path, fitted.transform(X[held_rows]), y[held_rows], loss))
        seconds.append(path.seconds)
        if on_fold is not None:
            on_fold(i, time.perf_counter() - t0)
    k = len(folds) // repeats
    return CVPath(
        strengths=np.asarray(strengths, dtype=np.float64),
        scores=np.asarray(scores).reshape(repeats, k, len(strengths)),
        seconds=np.asarray(seconds),
        maximize=maximize,
    )


# ---------------------------------------------------------------------------------------------
# The choice.


@dataclass(frozen=True)
class Choice:
    """Indices into the strengths: ``best`` (min rule), ``one_se`` (1-SE rule), ``chosen``."""

    best: int
    one_se: int
    chosen: int
    rule: Rule


def _best_index(strengths: np.ndarray, mean: np.ndarray, maximize: bool) -> int:
    """The best mean; among ties the largest strength (the sparsest model, as cv.glmnet's first
    match). Means of fold scores equal as fractions may differ in the last bits: ties are within 1e-12."""
    target = mean.max() if maximize else mean.min()
    ties = np.flatnonzero(np.abs(mean - target) <= 1e-12 * max(1.0, abs(target)))
    return int(ties[np.argmax(strengths[ties])])


def one_se_index(
    strengths: Sequence[float], mean: Sequence[float], sem: Sequence[float], maximize: bool
) -> int:
    """cv.glmnet's ``lambda.1se``: the largest strength whose mean CV metric is within one standard
    error (the best strength's) of the best mean."""
    strengths, mean, sem = (np.asarray(a, dtype=np.float64) for a in (strengths, mean, sem))
    best = _best_index(strengths, mean, maximize)
    bound = mean[best] - sem[best] if maximize else mean[best] + sem[best]
    slack = 1e-12 * max(1.0, abs(bound))
    within = np.flatnonzero(mean >= bound - slack if maximize else mean <= bound + slack)
    return int(within[np.argmax(strengths[within])])


def choose(
    strengths: Sequence[float], mean: Sequence[float], sem: Sequence[float], rule: Rule, maximize: bool
) -> Choice:
    """Both rules' picks and the one ``rule`` names (``min`` or ``1se``)."""
    if rule not in ("min", "1se"):
        raise SparsetrainError(f"path.choose must be 'min' or '1se', got {rule!r}")
    strengths_ = np.asarray(strengths, dtype=np.float64)
    mean_ = np.asarray(mean, dtype=np.float64)
    if not (len(strengths_) == len(mean_) == len(sem)) or not len(strengths_):
        raise SparsetrainError("strengths, means and standard errors must be equally long and non-empty")
    if not np.isfinite(mean_).all():
        raise SparsetrainError("a CV mean is not finite: the path diverged")
    best = _best_index(strengths_, mean_, maximize)
    one_se = one_se_index(strengths_, mean_, sem, maximize)
    return Choice(best, one_se, best if rule == "min" else one_se, rule)


# ---------------------------------------------------------------------------------------------
# The chosen solution as the project's linear network.


def to_network(coef: np.ndarray, intercept: np.ndarray, n_outputs: int) -> nn.Sequential:
    """The project's linear model (:func:`~sparsetrain.core.models.build_model`, so that it
    exports and serves as a trained one) holding a solution. A binary logistic solution (one row)
    becomes two logits ``(0, z)``, whose softmax is the logistic model's ``sigmoid(z)``: the same
    predictions and probabilities, and no extra nonzero weight."""
    coef, intercept = np.atleast_2d(coef), np.atleast_1d(intercept)
    if coef.shape[0] == 1 and n_outputs == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    if coef.shape[0] != n_outputs:
        raise SparsetrainError(
            f"a solution with {coef.shape[0]} outputs cannot make a {n_outputs}-output model"
        )
    network = build_model("linear", coef.shape[1], n_outputs)
    (layer,) = [m for m in network.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(coef, dtype=torch.float32))
        layer.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))
    return network.eval()
