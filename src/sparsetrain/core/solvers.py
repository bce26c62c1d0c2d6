"""Full-batch proximal solvers for linear models with a proximal penalty.

Objectives, with ``n`` samples, ``Z = X @ coef.T + intercept`` (``n x k``) and ``P`` the penalty
on ``coef`` (never on the intercept):

- ``squared``: ``1/(2n) |Y - Z|_F^2 + P(coef)``: scikit-learn's ``Lasso(alpha=strength)`` and
  ``ElasticNet(alpha=strength, l1_ratio=...)``; a 2-D ``y`` gives one output per column.
- ``logistic``: binary ``y`` (two labels; the larger one is the positive class),
  ``mean(log(1 + exp(z)) - y z) + P(coef)``: scikit-learn's ``LogisticRegression`` with
  ``C = 1 / (n * strength)`` (without liblinear's penalized intercept).
- ``multinomial``: ``k`` classes, ``coef`` is ``k x d``, ``mean(logsumexp(Z) - Z[i, y_i]) +
  P(coef)``: the true multinomial problem, not one-vs-rest (scikit-learn's saga, glmnet).

How it is fast (each part was kept because it paid off on ``benchmarks/solvers.py``):

- working sets (as skglm): score every feature by its optimality violation, solve on the support
  plus the worst violators, grow until the full problem passes the optimality test; along a path
  the sequential strong rule proposes the first working set (as glmnet) and the gradient of the
  previous solution is reused;
- squared loss: the working-set problem is a quadratic in the Gram matrix ``X'X / n``, which is
  cached and grown column by column (each pair multiplied once along a path), so the inner solve
  never touches the data;
- logistic loss: proximal Newton on the working set (Hessian ``X'DX / n``, ``D = p(1 - p)``) with
  an Armijo line search;
- every quadratic model is solved by FISTA with restart, finished by a semismooth Newton step on
  the active set, which is exact for a quadratic once the signs are right;
- multinomial loss (no cheap Hessian: a k x k block per sample): FISTA with backtracking and
  adaptive restart, first on all features to 1% of the initial violation, then on the features
  that are nonzero or violate optimality (skglm-style doubling working sets cost FISTA more
  restarts than their narrower products saved; this one screen was 1.4x faster than none);
- a penalty that is not elementwise separable (a group penalty): FISTA on all features.

Optimality is the proximal-gradient mapping ``|w - prox_s(w - s grad)|_inf / s`` with a small
step ``s``, and the gradient of the intercept: zero exactly at a solution and, for L1, the
distance of ``-grad`` to the subdifferential. ``tol`` bounds it.

Data-sized work runs in torch on ``device``; model-sized dense work (the quadratic models) runs in
numpy float64 on the host. On the CPU large products go through numpy's BLAS: the PyTorch CPU
wheel ships MKL, which ran float64 GEMM 2-3x slower than OpenBLAS on the AMD CPUs we measured.
``n_threads`` (default 1) caps BLAS and torch threads during a solve: on a busy 2-core machine
torch's OpenMP pool and OpenBLAS's pool spinning against each other made solves 5-10x slower
than one thread; pass ``None`` to leave the libraries' settings alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve
from threadpoolctl import threadpool_limits
from torch import Tensor
from torch.nn import functional as F

from sparsetrain.core.penalties import L1, PENALTIES, Penalty
from sparsetrain.errors import SparsetrainError

__all__ = ["LOSSES", "SolverResult", "lasso_path", "objective", "solve_linear", "strength_max"]


@dataclass(frozen=True)
class SolverResult:
    """What a solve returns; ``coef`` is ``(n_outputs, n_features)``, ``intercept`` ``(n_outputs,)``;
    ``kkt`` is the final optimality violation, ``n_iter`` the inner (Newton or FISTA) steps."""

    coef: np.ndarray
    intercept: np.ndarray
    objective: float
    n_iter: int
    converged: bool
    kkt: float
    seconds: float


# ---------------------------------------------------------------------------------------------
# Losses of the linear predictor, written for an (n, k) matrix Z.


@dataclass(frozen=True)
class _Squared:
    method: str = "gram"  # a quadratic: solved in Gram space on working sets

    def value(self, Z: Tensor, T: Tensor) -> Tensor:
        return 0.5 * ((Z - T) ** 2).sum() / Z.shape[0]

    def dloss(self, Z: Tensor, T: Tensor) -> Tensor:
        return Z - T

    def intercept_at_zero(self, T: Tensor) -> Tensor:
        return T.mean(0)


@dataclass(frozen=True)
class _Logistic:
    method: str = "newton"  # proximal Newton on working sets

    def value(self, Z: Tensor, T: Tensor) -> Tensor:
        return (F.softplus(Z) - T * Z).mean()

    def dloss(self, Z: Tensor, T: Tensor) -> Tensor:
        return torch.sigmoid(Z) - T

    def weights(self, Z: Tensor) -> Tensor:
        p = torch.sigmoid(Z[:, 0])
        return p * (1.0 - p)

    def intercept_at_zero(self, T: Tensor) -> Tensor:
        return torch.logit(T.mean(0))


@dataclass(frozen=True)
class _Multinomial:
    method: str = "fista"  # no cheap Hessian (a k x k block per sample): screened FISTA

    def value(self, Z: Tensor, T: Tensor) -> Tensor:
        return (torch.logsumexp(Z, 1) - (T * Z).sum(1)).mean()

    def dloss(self, Z: Tensor, T: Tensor) -> Tensor:
        return torch.softmax(Z, 1) - T

    def intercept_at_zero(self, T: Tensor) -> Tensor:
        logp = torch.log(T.mean(0))
        return logp - logp.mean()


LOSSES = {"squared": _Squared(), "logistic": _Logistic(), "multinomial": _Multinomial()}


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``; on the CPU through numpy's BLAS (see the module docstring for why)."""
    if a.device.type == "cpu" and not (a.requires_grad or b.requires_grad):
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))
    return a @ b


@contextlib.contextmanager
def _threads(n_threads: int | None) -> Iterator[None]:
    """Cap BLAS, OpenMP and torch threads for the duration of a solve (see the docstring)."""
    if n_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        torch.set_num_threads(before)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64, copy=False)


# ---------------------------------------------------------------------------------------------
# The problem: data on the device, encoded targets.


@dataclass
class _Problem:
    Xt: Tensor  # (d, n): X stored by columns, so a working set is a cheap row gather
    T: Tensor  # (n, k) encoded targets
    loss: object
    penalty: Penalty
    fit_intercept: bool
    step: float  # the small step of the optimality measure: 1 / (|X|_F^2 / n + 1)

    @property
    def n(self) -> int:
        return self.Xt.shape[1]

    def columns(self, cols: np.ndarray | None) -> Tensor:
        """``X[:, cols]`` (n x m, column-major), with a last column of ones if there is an intercept."""
        Xs = self.Xt if cols is None else self.Xt[torch.as_tensor(cols, device=self.Xt.device)]
        if self.fit_intercept:
            Xs = torch.cat([Xs, Xs.new_ones(1, self.n)], 0)
        return Xs.T


def _encode(X, y, loss: str, device, dtype) -> tuple[Tensor, Tensor, object]:
    if loss not in LOSSES:
        raise SparsetrainError(f"loss '{loss}' is unknown; choose one of {', '.join(LOSSES)}")
    Xn = np.asarray(X, dtype=np.float64)
    yn = np.asarray(y)
    if Xn.ndim != 2:
        raise SparsetrainError(f"X must be a 2-D array (samples x features), got shape {Xn.shape}")
    if yn.shape[0] != Xn.shape[0]:
        raise SparsetrainError(f"y has {yn.shape[0]} rows but X has {Xn.shape[0]}; pass one target per row")
    if not np.isfinite(Xn).all():
        raise SparsetrainError("X contains NaN or infinite values; impute or drop them first")
    if loss == "squared":
        T = yn.astype(np.float64).reshape(len(yn), -1)
        if not np.isfinite(T).all():
            raise SparsetrainError("y contains NaN or infinite values; drop those rows first")
    else:
        classes, codes = np.unique(yn, return_inverse=True)
        if len(classes) < 2:
            raise SparsetrainError(f"y has one class ({classes[0]}); a classifier needs two or more")
        if loss == "logistic" and len(classes) != 2:
            raise SparsetrainError(
                f"loss 'logistic' needs exactly two classes, y has {len(classes)}; use loss 'multinomial'"
            )
        codes = codes.reshape(-1)
        T = codes[:, None].astype(np.float64) if loss == "logistic" else np.eye(len(classes))[codes]
    to = {"device": device, "dtype": dtype}
    # A private copy by columns: read-only inputs (memory maps) stay untouched.
    return torch.as_tensor(np.array(Xn.T, order="C"), **to), torch.as_tensor(T, **to), LOSSES[loss]


def _problem(X, y, loss, penalty, fit_intercept, device, dtype) -> _Problem:
    Xt, T, lossf = _encode(X, y, loss, device, dtype)
    scale = float(torch.linalg.vector_norm(Xt)) ** 2 / Xt.shape[1] + 1.0
    return _Problem(Xt, T, lossf, penalty, bool(fit_intercept), 1.0 / scale)


# ---------------------------------------------------------------------------------------------
# Optimality measure and penalty capabilities.


def _violation(W, G, penalty: Penalty, step: float):
    """Elementwise proximal-gradient mapping ``|W - prox_s(W - s G)| / s``: zero at a solution."""
    return abs(W - penalty.prox(W - step * G, step)) / step


def _is_separable(penalty: Penalty) -> bool:
    """Working sets and Newton steps need a penalty that acts entry by entry (its class says so);
    at strength 0 every penalty is zero, hence separable."""
    return penalty.separable or not penalty.strength > 0


def _check_proximal(penalty: Penalty) -> None:
    """Fail fast on a penalty whose prox is not its proximal operator (L0 gates act through
    training hooks instead); at strength 0 there is nothing to penalize."""
    if penalty.strength > 0 and not penalty.exact_prox:
        usable = ", ".join(name for name, cls in PENALTIES.items() if cls.exact_prox)
        raise SparsetrainError(
            f"penalty '{penalty.name}' has no proximal operator the linear solver can use; "
            f"use one of {usable}"
        )


def _prox_np(penalty: Penalty, V: np.ndarray, step: float, free: np.ndarray) -> np.ndarray:
    out = penalty.prox(torch.from_numpy(V), step).numpy().copy()
    out[free] = V[free]
    return out


def _prox_and_slope(penalty: Penalty, V: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """The prox and its elementwise derivative: a separable prox has a diagonal Jacobian, which
    is the gradient of the sum of its outputs."""
    v = torch.from_numpy(V.copy()).requires_grad_(True)
    z = penalty.prox(v, step)
    if not z.requires_grad:  # a prox that does not depend on its input
        return z.detach().numpy().copy(), np.zeros_like(V)
    (slope,) = torch.autograd.grad(z.sum(), v)
    return z.detach().numpy().copy(), slope.numpy().copy()


def _penalty_np(penalty: Penalty, X: np.ndarray, free: np.ndarray) -> float:
    return float(penalty.value(torch.from_numpy(np.where(free, 0.0, X))))


# ---------------------------------------------------------------------------------------------
# Quadratic model: min_X 1/2 <X, C X G> + <Q, X> + P(X[~free]) over a (k, m) matrix X, with C
# (k x k) and G (m x m) positive semidefinite. Model-sized: numpy float64 on the host.


@dataclass
class _Quadratic:
    C: np.ndarray
    G: np.ndarray
    Q: np.ndarray
    penalty: Penalty
    free: np.ndarray  # unpenalized entries (the intercept column)
    L: float  # FISTA's step is 1/L; raised by backtracking on the exact curvature
    kkt_step: float
    max_active: int = 2000  # larger Newton systems cost more than the FISTA steps they save

    def hv(self, X: np.ndarray) -> np.ndarray:
        return self.C @ X @ self.G

    def value(self, X: np.ndarray, HX: np.ndarray) -> float:
        return float(0.5 * np.vdot(X, HX) + np.vdot(self.Q, X)) + _penalty_np(self.penalty, X, self.free)

    def kkt(self, X: np.ndarray, HX: np.ndarray) -> float:
        s = self.kkt_step
        return float(np.abs(X - _prox_np(self.penalty, X - s * (HX + self.Q), s, self.free)).max()) / s

    def newton(self, X: np.ndarray, HX: np.ndarray) -> np.ndarray | None:
        """Semismooth Newton step on ``X = prox(X - s grad)`` (the generalized Jacobian of the
        prox is diagonal): exact for a quadratic once the active set and signs are right."""
        s = 1.0 / self.L
        V = X - s * (HX + self.Q)
        Z, d = _prox_and_slope(self.penalty, V, s)
        Z[self.free], d[self.free] = V[self.free], 1.0
        active = self.free | ((d > 0) & (Z != 0))
        delta = Z - X  # off the active set the step lands on the prox point
        A = np.flatnonzero(active)
        if len(A) == 0:
            return Z
        if len(A) > self.max_active:
            return None
        m = X.shape[1]
        rows, cols = np.divmod(A, m)
        dA = d.ravel()[A]
        M = self.C[np.ix_(rows, rows)] * self.G[np.ix_(cols, cols)]
        M[np.diag_indices_from(M)] += (1.0 - dA) / (s * dA) + 1e-12 * max(float(M.diagonal().max()), 1e-300)
        outside = np.where(active, 0.0, delta)
        rhs = -(X - Z).ravel()[A] / (s * dA) - self.hv(outside).ravel()[A]
        try:
            step = cho_solve(cho_factor(M, check_finite=False), rhs, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        delta.ravel()[A] = step
        return X + delta

    def solve(self, X: np.ndarray, tol: float, max_iter: int = 10_000, newton_every: int = 10):
        """FISTA with gradient restart, with a Newton step now and then; stops at KKT <= tol."""
        HX = self.hv(X)
        Y, HY, t = X, HX, 1.0
        for it in range(1, max_iter + 1):
            grad = HY + self.Q
            while True:
                Xn = _prox_np(self.penalty, Y - grad / self.L, 1.0 / self.L, self.free)
                HXn = self.hv(Xn)
                D = Xn - Y
                dd = float(np.vdot(D, D))
                curv = float(np.vdot(D, HXn - HY))
                if curv <= self.L * dd or dd == 0.0:
                    break
                self.L = 1.5 * curv / dd
            if it == 2 or it % newton_every == 0 or dd == 0.0:
                if self.kkt(Xn, HXn) <= tol:
                    return Xn
                Xs = self.newton(Xn, HXn)
                if Xs is not None:
                    HXs = self.hv(Xs)
                    if self.value(Xs, HXs) <= self.value(Xn, HXn):
                        if self.kkt(Xs, HXs) <= tol:
                            return Xs
                        X, HX, Y, HY, t = Xs, HXs, Xs, HXs, 1.0
                        continue
            if float(np.vdot(D, Xn - X)) < 0:  # restart when <y - x+, x+ - x> > 0 (O'Donoghue & Candes)
                t = 1.0
            t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            beta = (t - 1.0) / t_new
            Y, HY = Xn + beta * (Xn - X), HXn + beta * (HXn - HX)
            X, HX, t = Xn, HXn, t_new
        return X


def _power_norm(C: np.ndarray, G: np.ndarray, iters: int = 10) -> float:
    """A few power iterations: a lower estimate of the largest eigenvalue, for the first step."""
    V = np.ones((C.shape[0], G.shape[0]))
    lam = 1e-12
    for _ in range(iters):
        U = C @ V @ G
        lam = max(float(np.linalg.norm(U)), 1e-12)
        V = U / lam
    return lam


# ---------------------------------------------------------------------------------------------
# Working-set solvers: Gram space (squared loss), proximal Newton (logistic loss).


class _GramCache:
    """The squared loss in Gram space: ``X'X / n`` and ``X'Y / n`` over every column seen so far,
    in the order first seen (the intercept's column of ones first), in buffers that grow by
    doubling. Along a path each pair of columns is multiplied once, and the working-set problems
    need no pass over the data."""

    def __init__(self, P: _Problem):
        self.P = P
        self.head = int(P.fit_intercept)  # entries before the first column: the intercept
        self.cols = np.empty(0, dtype=np.int64)
        self.rows = P.Xt.new_empty((0, P.n))  # the cached columns of X (+ ones), as rows
        self.G = np.empty((0, 0))
        self.c = np.empty((P.T.shape[1], 0))
        self.size = 0  # used entries of the buffers
        self.L = 1e-12  # the quadratic model's step estimate: backtracking raises it
        if P.fit_intercept:
            self._append(P.Xt.new_ones(1, P.n))

    def _append(self, Xn: Tensor) -> None:
        P, m, k = self.P, self.size, Xn.shape[0]
        if m + k > self.G.shape[0]:
            cap = min(max(2 * (m + k), 64), P.Xt.shape[0] + self.head)
            rows, G, c = P.Xt.new_empty((cap, P.n)), np.zeros((cap, cap)), np.zeros((self.c.shape[0], cap))
            rows[:m], G[:m, :m], c[:, :m] = self.rows[:m], self.G[:m, :m], self.c[:, :m]
            self.rows, self.G, self.c = rows, G, c
        self.rows[m : m + k] = Xn
        cross = _np(_mm(Xn, self.rows[: m + k].T) / P.n)
        self.G[m : m + k, : m + k] = cross
        self.G[: m + k, m : m + k] = cross.T
        self.c[:, m : m + k] = _np(_mm(Xn, P.T) / P.n).T
        self.size = m + k

    def extend(self, cols: np.ndarray) -> np.ndarray:
        """Add the missing columns of ``cols``; returns all cached columns (in cache order)."""
        new = np.setdiff1d(cols, self.cols)
        if len(new):
            self._append(self.P.Xt[torch.as_tensor(new, device=self.P.Xt.device)])
            self.cols = np.concatenate([self.cols, new])
        return self.cols

    def quadratic(self) -> tuple[np.ndarray, np.ndarray]:
        """``(G, c)`` over the cached entries (views, no copy)."""
        return self.G[: self.size, : self.size], self.c[:, : self.size]


@dataclass
class _State:
    W: Tensor  # (k, d)
    b: Tensor  # (k,)
    GW: Tensor | None = None  # gradient at (W, b) from the last optimality check
    gb: float = 0.0  # largest intercept gradient, likewise
    loss: float = math.nan  # the data term, likewise
    fresh: bool = False  # GW, gb and loss belong to the current (W, b)
    Z: Tensor | None = None  # the predictor at (W, b) when a solver had it at hand
    screen: bool = False  # FISTA has made its first pass over all features
    kkt: float = math.inf
    n_iter: int = 0
    L: float | None = None  # FISTA's step estimate, carried between calls


def _newton(P: _Problem, S: _State, cols: np.ndarray, tol: float, budget: int) -> int:
    """Proximal Newton for the logistic loss on the columns ``cols``, until their optimality
    is below ``tol``. Each step solves the quadratic model ``X'DX/n`` (``D = p(1 - p)``) plus
    the penalty, then takes the largest of the steps 1, 1/2, 1/4... that decreases the
    objective enough (Armijo). Returns the number of Newton steps."""
    Xs = P.columns(cols)  # (n, m [+1])
    idx = torch.as_tensor(cols, device=P.Xt.device)
    V = _np(torch.cat([S.W[:, idx], S.b[:, None]], 1) if P.fit_intercept else S.W[:, idx]).copy()
    free = np.zeros_like(V, dtype=bool)
    free[:, len(cols) :] = True
    Z = _mm(Xs, torch.as_tensor(V, device=P.Xt.device, dtype=P.Xt.dtype).T)
    C, L, it = np.ones((1, 1)), None, 0
    while it < budget:
        grad = _np(_mm(P.loss.dloss(Z, P.T).T, Xs)) / P.n
        kkt = _kkt(P.penalty, V, grad, free, P.step)
        if kkt <= tol:
            break
        it += 1
        G = _np(_mm(Xs.T, Xs * (P.loss.weights(Z) / P.n)[:, None]))
        if L is None:
            L = _power_norm(C, G)
        quad = _Quadratic(C, G, grad - V @ G, P.penalty, free, L, P.step)
        V_new = quad.solve(V.copy(), tol=min(tol, 0.25 * kkt))
        L = quad.L
        V, Z = _line_search(P, Xs, V, Z, V_new, grad, free)
    _store(P, S, idx, V)
    return it


def _kkt(penalty: Penalty, V: np.ndarray, grad: np.ndarray, free: np.ndarray, step: float) -> float:
    return float(np.abs(V - _prox_np(penalty, V - step * grad, step, free)).max()) / step


def _line_search(P: _Problem, Xs: Tensor, V, Z, V_new, grad, free):
    """Armijo backtracking along ``V_new - V`` on the true objective; the predictor moves
    linearly, so a trial costs no product with X."""
    D = V_new - V
    if not D.any():
        return V, Z
    ZD = _mm(Xs, torch.as_tensor(D, device=Z.device, dtype=Z.dtype).T)
    pen = _penalty_np(P.penalty, V, free)
    f0 = float(P.loss.value(Z, P.T)) + pen
    decrease = float(np.vdot(grad, D)) + _penalty_np(P.penalty, V_new, free) - pen
    t = 1.0
    for _ in range(40):
        Vt, Zt = V + t * D, Z + t * ZD
        if float(P.loss.value(Zt, P.T)) + _penalty_np(P.penalty, Vt, free) <= f0 + 1e-4 * t * decrease:
            return Vt, Zt
        t *= 0.5
    return V, Z


# ---------------------------------------------------------------------------------------------
# FISTA: the multinomial loss, and penalties that are not separable.


def _fista(P: _Problem, S: _State, cols: np.ndarray | None, tol: float, max_iter: int) -> int:
    """FISTA with backtracking and adaptive restart on the columns ``cols`` (all when None).

    The step test is gradient based, ``<grad(x+) - grad(y), x+ - y> <= L |x+ - y|^2``, computed
    in sample space: no extra product with X, and no difference of nearly equal objective values
    (which float rounding drowns near the optimum). Stops when the gradient mapping at the
    extrapolated point, ``L |x+ - y|_inf``, is below ``tol``. Returns the number of iterations."""
    idx = None if cols is None else torch.as_tensor(cols, device=P.Xt.device)
    X = P.Xt.T if idx is None else P.Xt[idx].T
    n, T, loss, pen, L = P.n, P.T, P.loss, P.penalty, S.L
    Wx, bx = (S.W if idx is None else S.W[:, idx]), S.b
    Zx = _mm(X, Wx.T) + bx
    Wy, by, Zy, t = Wx, bx, Zx, 1.0
    Ry = loss.dloss(Zy, T)
    for it in range(1, max_iter + 1):
        GW = _mm(Ry.T, X) / n
        gb = Ry.mean(0) if P.fit_intercept else torch.zeros_like(by)
        while True:
            Wn, bn = pen.prox(Wy - GW / L, 1.0 / L), by - gb / L
            Zn = _mm(X, Wn.T) + bn
            Rn = loss.dloss(Zn, T)
            dW, db = Wn - Wy, bn - by
            dd = float((dW * dW).sum() + (db * db).sum())
            curv = float(((Rn - Ry) * (Zn - Zy)).sum()) / n
            if curv <= L * dd or dd == 0.0:
                break
            L = max(2.0 * L, 1.2 * curv / dd)
        if L * max(float(dW.abs().max()), float(db.abs().max())) <= tol:
            Wx, bx, Zx = Wn, bn, Zn
            break
        if float((dW * (Wn - Wx)).sum() + (db * (bn - bx)).sum()) < 0:  # gradient restart
            t = 1.0
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        Wy, by, Zy = Wn + beta * (Wn - Wx), bn + beta * (bn - bx), Zn + beta * (Zn - Zx)
        Ry = Rn if beta == 0.0 else loss.dloss(Zy, T)
        Wx, bx, Zx, t = Wn, bn, Zn, t_new
        L *= 0.9  # let the step grow back where the curvature is lower
    if idx is None:
        S.W = Wx
    else:
        S.W = torch.zeros_like(S.W)
        S.W[:, idx] = Wx
    S.b, S.L, S.fresh, S.Z = bx, L, False, Zx
    return it


# ---------------------------------------------------------------------------------------------
# The working-set driver.


def _working_set(W: Tensor, score: Tensor, extra: np.ndarray | None, p0: int = 10) -> np.ndarray:
    """The support plus the worst violators, ``max(p0, 2 |support|)`` features in all (skglm)."""
    support = (W != 0).any(0)
    size = min(W.shape[1], max(p0, 2 * int(support.sum())))
    rank = torch.where(support, torch.full_like(score, math.inf), score)
    top = torch.topk(rank, size).indices
    cols = top[rank[top] > 0].cpu().numpy()
    if extra is not None:
        cols = np.union1d(cols, extra)
    return np.sort(cols)


def _screened(S: _State, score: Tensor, tol: float) -> np.ndarray | None:
    """FISTA's working set: the features that are nonzero or violate optimality, once a first
    loose solve on all features (to 1% of the initial violation) has found them. Few rounds:
    each restart costs FISTA its momentum."""
    if not S.screen:
        S.screen = True
        return None
    keep = (S.W != 0).any(0) | (score > 0.1 * tol)
    return torch.nonzero(keep).flatten().cpu().numpy() if keep.float().mean() < 0.8 else None


def _check(P: _Problem, S: _State) -> Tensor:
    """Full gradient (reused when the point has not moved: along a path only the penalty
    changes) and optimality at the current point; returns the per-feature scores."""
    if not S.fresh:
        Z = S.Z if S.Z is not None else _mm(P.Xt.T, S.W.T) + S.b
        R = P.loss.dloss(Z, P.T)
        S.GW = _mm(R.T, P.Xt.T) / P.n
        S.gb = float(R.mean(0).abs().max()) if P.fit_intercept else 0.0
        S.loss = float(P.loss.value(Z, P.T))
        S.fresh = True
    score = _violation(S.W, S.GW, P.penalty, P.step).amax(0)
    S.kkt = max(float(score.max()), S.gb)
    return score


def _solve_gram(P: _Problem, S: _State, cols: np.ndarray, tol: float, gram: _GramCache) -> int:
    """Squared loss on the cached columns (a superset of ``cols``): the quadratic
    ``1/2 <V, V G> - <c, V>`` plus the penalty, solved to ``tol`` without touching the data."""
    idx = torch.as_tensor(gram.extend(cols), device=P.Xt.device)
    V = S.W[:, idx]
    if P.fit_intercept:  # the intercept is the cache's first entry
        V = torch.cat([S.b[:, None], V], 1)
    V = _np(V).copy()
    free = np.zeros_like(V, dtype=bool)
    free[:, : gram.head] = True
    G, c = gram.quadratic()
    quad = _Quadratic(np.eye(V.shape[0]), G, -c, P.penalty, free, gram.L, P.step)
    V = quad.solve(V, tol)
    gram.L = quad.L
    Z = _mm(gram.rows[: gram.size].T, torch.as_tensor(V, device=P.Xt.device, dtype=P.Xt.dtype).T)
    if P.fit_intercept:
        V = np.concatenate([V[:, 1:], V[:, :1]], 1)  # _store wants the intercept last
    _store(P, S, idx, V)
    S.Z = Z  # from the cached columns only: cheaper than a pass over all of X
    return 1


def _store(P: _Problem, S: _State, idx: Tensor, V: np.ndarray) -> None:
    """Write a working-set solution ``V`` (coef columns, then the intercept) back into S."""
    to = {"device": P.Xt.device, "dtype": P.Xt.dtype}
    S.W = torch.zeros_like(S.W)
    S.W[:, idx] = torch.as_tensor(V[:, : len(idx)], **to)
    if P.fit_intercept:
        S.b = torch.as_tensor(V[:, -1], **to)
    S.fresh, S.Z = False, None


def _solve(P: _Problem, S: _State, tol: float, max_iter: int, gram: _GramCache, extra=None) -> _State:
    _check_proximal(P.penalty)
    separable = _is_separable(P.penalty)
    if S.L is None:
        S.L = float(torch.linalg.vector_norm(P.Xt, dim=1).max()) ** 2 / P.n
    while True:
        score = _check(P, S)
        if S.kkt <= tol or S.n_iter >= max_iter:
            return S
        budget = max_iter - S.n_iter
        if not separable:
            S.n_iter += _fista(P, S, None, tol, budget)
            continue
        if P.loss.method == "fista":
            cols = _screened(S, score, tol)
            S.n_iter += _fista(P, S, cols, tol if cols is not None else max(tol, 0.01 * S.kkt), budget)
            continue
        cols = _working_set(S.W, score, extra)
        extra = None
        if P.loss.method == "gram":
            S.n_iter += _solve_gram(P, S, cols, tol, gram)
        else:
            S.n_iter += max(1, _newton(P, S, cols, 0.3 * S.kkt, budget))


# ---------------------------------------------------------------------------------------------
# Public API.


def _initial_state(P: _Problem, coef0, intercept0) -> _State:
    k, d = P.T.shape[1], P.Xt.shape[0]
    to = {"device": P.Xt.device, "dtype": P.Xt.dtype}
    if coef0 is None:
        W = torch.zeros(k, d, **to)
    else:
        W = torch.as_tensor(np.asarray(coef0, dtype=np.float64), **to).reshape(k, d).clone()
    if not P.fit_intercept:
        b = torch.zeros(k, **to)
    elif intercept0 is not None:
        b = torch.as_tensor(np.asarray(intercept0, dtype=np.float64), **to).reshape(k).clone()
    else:
        b = P.loss.intercept_at_zero(P.T)
    return _State(W, b)


def _result(P: _Problem, S: _State, tol: float, t0: float) -> SolverResult:
    _check(P, S)  # free after a solve: the last check was at this point
    return SolverResult(
        coef=_np(S.W).copy(),
        intercept=_np(S.b).copy(),
        objective=S.loss + float(P.penalty.value(S.W)),
        n_iter=S.n_iter,
        converged=S.kkt <= tol,
        kkt=S.kkt,
        seconds=time.perf_counter() - t0,
    )


def _check_options(tol: float, max_iter: int, n_threads: int | None) -> None:
    if not (isinstance(tol, (int, float, np.floating)) and 0 < tol < math.inf):
        raise SparsetrainError(f"tol must be a positive number, got {tol!r}")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise SparsetrainError(f"max_iter must be a positive integer, got {max_iter!r}")
    if n_threads is not None and not (isinstance(n_threads, (int, np.integer)) and n_threads >= 1):
        raise SparsetrainError(f"n_threads must be a positive integer or None, got {n_threads!r}")


def solve_linear(
    X,
    y,
    *,
    loss: str,
    penalty: Penalty,
    fit_intercept: bool = True,
    tol: float = 1e-6,
    max_iter: int = 5000,
    coef0=None,
    intercept0=None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    n_threads: int | None = 1,
) -> SolverResult:
    """Minimize ``loss + penalty`` over a linear model (conventions in the module docstring).

    Stops when the optimality violation (``result.kkt``) is at most ``tol``, or after
    ``max_iter`` inner steps; ``coef0`` / ``intercept0`` warm-start it."""
    t0 = time.perf_counter()
    _check_options(tol, max_iter, n_threads)
    with _threads(n_threads):
        P = _problem(X, y, loss, penalty, fit_intercept, device, dtype)
        S = _initial_state(P, coef0, intercept0)
        S = _solve(P, S, tol, int(max_iter), _GramCache(P))
        return _result(P, S, tol, t0)


def objective(X, y, coef, intercept=None, *, loss: str, penalty: Penalty) -> float:
    """The objective of ``solve_linear`` at ``(coef, intercept)``, in float64: the yardstick
    for comparing solvers whose own tolerances mean different things."""
    Xt, T, lossf = _encode(X, y, loss, "cpu", torch.float64)
    W = torch.as_tensor(np.asarray(coef, dtype=np.float64)).reshape(T.shape[1], Xt.shape[0])
    b = torch.zeros(T.shape[1], dtype=torch.float64)
    if intercept is not None:
        b = b + torch.as_tensor(np.asarray(intercept, dtype=np.float64)).reshape(-1)
    Z = _mm(Xt.T, W.T) + b
    return float(lossf.value(Z, T) + penalty.value(W))


def strength_max(X, y, loss: str, fit_intercept: bool = True, penalty: Penalty | None = None) -> float:
    """Smallest strength at which ``coef = 0`` is optimal, the intercept at its optimum, for
    ``penalty``'s family (L1 by default): where a regularization path starts."""
    P = _problem(X, y, loss, L1(0.0), fit_intercept, "cpu", torch.float64)
    S = _initial_state(P, None, None)
    _check(P, S)
    return (penalty or L1(0.0)).strength_max(S.GW)


def lasso_path(
    X,
    y,
    strengths: Sequence[float],
    *,
    loss: str,
    penalty_factory: Callable[[float], Penalty] = L1,
    fit_intercept: bool = True,
    tol: float = 1e-6,
    max_iter: int = 5000,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    n_threads: int | None = 1,
) -> list[SolverResult]:
    """Solve at each strength in the given order (pass them decreasing), each warm-started from
    the previous solution; the first working set of each is the previous support plus the
    sequential strong rule's candidates (features that violate optimality at ``2 s - s_prev``)."""
    _check_options(tol, max_iter, n_threads)
    if len(strengths) == 0:
        raise SparsetrainError("strengths is empty; pass at least one strength")
    with _threads(n_threads):
        P = _problem(X, y, loss, penalty_factory(float(strengths[0])), fit_intercept, device, dtype)
        S = _initial_state(P, None, None)
        gram = _GramCache(P)
        results, previous = [], None
        for s in map(float, strengths):
            t0 = time.perf_counter()
            P.penalty = penalty_factory(s)
            S.n_iter, S.kkt = 0, math.inf
            S = _solve(P, S, tol, int(max_iter), gram, extra=_strong_set(P, S, s, previous))
            results.append(_result(P, S, tol, t0))
            previous = s
        return results


def _strong_set(P: _Problem, S: _State, s: float, previous: float | None) -> np.ndarray | None:
    """Sequential strong rule (Tibshirani et al. 2012), for any penalty with a ``strength``."""
    if previous is None or S.GW is None or not dataclasses.is_dataclass(P.penalty):
        return None
    screen = dataclasses.replace(P.penalty, strength=max(2.0 * s - previous, 0.0))
    score = _violation(S.W, S.GW, screen, P.step).amax(0)
    return torch.nonzero(score > 0).flatten().cpu().numpy()
