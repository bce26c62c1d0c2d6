"""Solver speed: sparsetrain's linear solver against scikit-learn, skglm, celer and R's glmnet.

    python -m benchmarks.solvers --quick      # < 2 minutes on 2 cores (subsets, tolerance 1e-4)
    python -m benchmarks.solvers              # the full table of benchmarks/README.md
    python -m benchmarks.solvers --only binary,path

(from the repository root).

Problems (same objective for every solver; C = 1 / (n * strength) for scikit-learn and celer):
- ``binary``: L1 logistic regression, Fashion-MNIST T-shirt (0) vs Shirt (6), 12000 x 784,
  standardized with the training mean / std, no intercept, strength 0.02 x strength_max;
- ``multinomial``: 10-class L1 logistic regression on the 60000 training images, intercept,
  strength 0.03 x strength_max (skglm and celer only do one-vs-rest: not the same problem);
- ``path``: Lasso path, 50 strengths from strength_max down to strength_max / 100, synthetic
  10000 x 5000 (AR(1) correlated features, rho 0.5, 10% true support, SNR 3), centered, no intercept.

Time to tolerance: each solver runs a ladder of its own tolerance settings (loose to tight, each
run timed); its time is that of the first setting whose objective, re-evaluated in float64 by
``sparsetrain.core.solvers.objective``, is within ``target`` (1e-6; quick 1e-4) relative of the best
objective any solver reached (on a path: at every strength). Each solver's ``tol`` means something
different, so only the achieved objective counts. ratio = peer time / sparsetrain time. Every
solver runs on one thread (BLAS and torch pinned): the peers are single-threaded, and on this
shared 2-core machine two thread pools made everything slower. The binary problem is also timed
in a fresh process per solver (import + first call: skglm compiles with numba on first use).

Results go to ``benchmarks/results/solvers.json`` (``solvers_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import functools
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from sparsetrain.core.penalties import L1
from sparsetrain.core.solvers import lasso_path, objective, solve_linear, strength_max

from ._common import RESULTS, machine, write_json

TMP = Path(tempfile.mkdtemp(prefix="sparsetrain-bench-"))


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Problem:
    name: str
    loss: str  # squared | logistic | multinomial
    X: np.ndarray  # float64, Fortran order (what skglm / celer want)
    y: np.ndarray
    strengths: list[float]  # one strength, or a path
    fit_intercept: bool
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    info: dict = field(default_factory=dict)


@functools.cache
def fashion():
    """Fashion-MNIST train / test as float64 (read once per process)."""
    from sparsetrain.core.data import load_fashion_mnist

    ds = load_fashion_mnist()
    s = ds.official_test_start
    X, y, Xt, yt = ds.X[:s].astype(np.float64), ds.y[:s], ds.X[s:].astype(np.float64), ds.y[s:]
    return X, y, Xt, yt


def standardize(X, Xt):
    mean, std = X.mean(0), X.std(0)
    std[std == 0] = 1.0
    return np.asfortranarray((X - mean) / std), (Xt - mean) / std


def binary_problem(rows: int | None) -> Problem:
    X, y, Xt, yt = fashion()
    keep, keep_t = np.isin(y, (0, 6)), np.isin(yt, (0, 6))
    X, y, Xt, yt = (
        X[keep][:rows],
        (y[keep][:rows] == 6).astype(np.float64),
        Xt[keep_t],
        (yt[keep_t] == 6) * 1.0,
    )
    X, Xt = standardize(X, Xt)
    smax = strength_max(X, y, "logistic", fit_intercept=False)
    return Problem("binary", "logistic", X, y, [0.02 * smax], False, Xt, yt, {"strength_max": smax})


def multinomial_problem(rows: int | None) -> Problem:
    X, y, Xt, yt = fashion()
    X, y = X[:rows], y[:rows]
    X, Xt = standardize(X, Xt)
    smax = strength_max(X, y, "multinomial", fit_intercept=True)
    return Problem("multinomial", "multinomial", X, y, [0.03 * smax], True, Xt, yt, {"strength_max": smax})


def path_problem(n: int, p: int, n_strengths: int, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    X = np.empty((n, p), order="F")
    X[:, 0] = rng.standard_normal(n)
    for j in range(1, p):  # AR(1) correlation 0.5 between neighbouring features
        X[:, j] = 0.5 * X[:, j - 1] + math.sqrt(0.75) * rng.standard_normal(n)
    w = np.zeros(p)
    support = rng.choice(p, p // 10, replace=False)
    w[support] = rng.standard_normal(len(support))
    y = X @ w
    y += rng.standard_normal(n) * np.linalg.norm(y) / math.sqrt(n) / 3.0
    X -= X.mean(0)
    y -= y.mean()
    smax = strength_max(X, y, "squared", fit_intercept=False)
    grid = list(smax * np.geomspace(1.0, 1e-2, n_strengths))
    return Problem("path", "squared", X, y, grid, False, info={"strength_max": smax})


# ---------------------------------------------------------------------------------------------
# Solvers: each maps (problem, setting) -> list of (coef (k, d), intercept (k,)), one per strength.


def _sk_logistic(**kw):
    """scikit-learn's L1 logistic regression, spelled for the installed version (1.8 moved the
    penalty into ``l1_ratio``)."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(v) for v in sklearn.__version__.split(".")[:2])
    l1 = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    return LogisticRegression(**l1, **kw)


def run_ours(pb: Problem, tol: float):
    if len(pb.strengths) > 1:
        res = lasso_path(pb.X, pb.y, pb.strengths, loss=pb.loss, fit_intercept=pb.fit_intercept, tol=tol)
        return [(r.coef, r.intercept) for r in res]
    r = solve_linear(
        pb.X, pb.y, loss=pb.loss, penalty=L1(pb.strengths[0]), fit_intercept=pb.fit_intercept, tol=tol
    )
    return [(r.coef, r.intercept)]


def run_liblinear(pb: Problem, tol: float):
    C = 1.0 / (len(pb.y) * pb.strengths[0])
    m = _sk_logistic(C=C, solver="liblinear", fit_intercept=False, tol=tol, max_iter=100_000).fit(pb.X, pb.y)
    return [(m.coef_, np.zeros(1))]


def run_saga(pb: Problem, max_iter: int):
    C = 1.0 / (len(pb.y) * pb.strengths[0])
    m = _sk_logistic(C=C, solver="saga", fit_intercept=pb.fit_intercept, tol=1e-12, max_iter=max_iter)
    m.fit(pb.X, pb.y)
    return [(m.coef_, m.intercept_ if pb.fit_intercept else np.zeros(len(m.coef_)))]


def run_skglm(pb: Problem, tol: float):
    from skglm import Lasso, SparseLogisticRegression

    if pb.loss == "logistic":
        m = SparseLogisticRegression(alpha=pb.strengths[0], tol=tol, fit_intercept=False, max_iter=100)
        return [(m.fit(pb.X, pb.y).coef_.reshape(1, -1), np.zeros(1))]
    m = Lasso(alpha=pb.strengths[0], tol=tol, fit_intercept=False, warm_start=True, max_iter=100)
    out = []
    for s in pb.strengths:
        m.alpha = s
        out.append((m.fit(pb.X, pb.y).coef_.reshape(1, -1).copy(), np.zeros(1)))
    return out


def run_celer(pb: Problem, tol: float):
    import celer

    if pb.loss == "logistic":
        C = 1.0 / (len(pb.y) * pb.strengths[0])
        m = celer.LogisticRegression(C=C, tol=tol, max_iter=100).fit(pb.X, pb.y)
        return [(m.coef_.reshape(1, -1), np.zeros(1))]
    _, coefs, _ = celer.celer_path(pb.X, pb.y, "lasso", alphas=np.array(pb.strengths), tol=tol, max_iter=100)
    return [(coefs[:, i].reshape(1, -1), np.zeros(1)) for i in range(coefs.shape[1])]


def run_sklearn_path(pb: Problem, tol: float):
    from sklearn.linear_model import lasso_path as sk_lasso_path

    _, coefs, _ = sk_lasso_path(pb.X, pb.y, alphas=np.array(pb.strengths), tol=tol, max_iter=100_000)
    return [(coefs[:, i].reshape(1, -1), np.zeros(1)) for i in range(coefs.shape[1])]


GLMNET_R = r"""
suppressMessages(library(glmnet))
a <- commandArgs(TRUE)
fam <- a[1]; n <- as.integer(a[2]); p <- as.integer(a[3])
X <- matrix(readBin(a[4], "double", n * p), nrow = n)
y <- readBin(a[5], "double", n)
if (fam != "gaussian") y <- factor(y)
lam <- scan(a[6], quiet = TRUE)
t <- system.time(f <- glmnet(X, y, family = fam, lambda = lam, standardize = FALSE,
                             intercept = a[8] == "1", thresh = as.numeric(a[7]), maxit = 1e7))
if (fam == "multinomial") B <- do.call(rbind, lapply(coef(f), as.matrix)) else B <- as.matrix(coef(f))
write(t[["elapsed"]], a[9])
write.table(B, a[10], row.names = FALSE, col.names = FALSE)
"""


def glmnet_available() -> bool:
    if shutil.which("Rscript") is None:
        return False
    ok = subprocess.run(["Rscript", "-e", "library(glmnet)"], capture_output=True, check=False)
    return ok.returncode == 0


def run_glmnet(pb: Problem, thresh: float):
    """glmnet in its fast mode: a warm-started decreasing path (100 strengths from strength_max
    for a single strength). Timed inside R (the glmnet call only); coefficients read back."""
    n, p = pb.X.shape
    x_file, y_file, lam_file = TMP / f"{pb.name}_X.bin", TMP / f"{pb.name}_y.bin", TMP / "lam.txt"
    if not x_file.exists():
        np.asfortranarray(pb.X).T.tofile(x_file)  # column-major, as R reads it
        pb.y.astype(np.float64).tofile(y_file)
    smax = pb.info["strength_max"]
    lams = pb.strengths if len(pb.strengths) > 1 else list(np.geomspace(smax, pb.strengths[0], 100))
    np.savetxt(lam_file, lams)
    (TMP / "glmnet.R").write_text(GLMNET_R)
    family = {"squared": "gaussian", "logistic": "binomial", "multinomial": "multinomial"}[pb.loss]
    args = [
        family,
        n,
        p,
        x_file,
        y_file,
        lam_file,
        thresh,
        int(pb.fit_intercept),
        TMP / "t.txt",
        TMP / "B.txt",
    ]
    subprocess.run(["Rscript", TMP / "glmnet.R", *map(str, args)], check=True, capture_output=True)
    seconds = float((TMP / "t.txt").read_text())
    B = np.loadtxt(TMP / "B.txt").reshape(-1, p + 1, len(lams))  # (k, 1 + p, strengths)
    picks = range(len(lams)) if len(pb.strengths) > 1 else [len(lams) - 1]
    return [(B[:, 1:, i], B[:, 0, i]) for i in picks], seconds


# ---------------------------------------------------------------------------------------------
# Time to tolerance


@dataclass
class Run:
    setting: float
    seconds: float
    objectives: list[float]
    coefs: list[tuple[np.ndarray, np.ndarray]]


def evaluate(pb: Problem, coefs) -> list[float]:
    return [
        objective(pb.X, pb.y, c, b, loss=pb.loss, penalty=L1(s))
        for (c, b), s in zip(coefs, pb.strengths, strict=True)
    ]


def timed(fn, pb: Problem, setting: float) -> Run:
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = fn(pb, setting)
        seconds = time.perf_counter() - t0
    if isinstance(out, tuple):  # glmnet reports its own time
        out, seconds = out
    return Run(setting, seconds, evaluate(pb, out), out)


def subopt(run: Run, best: list[float]) -> float:
    """Worst relative suboptimality over the strengths."""
    return max((f - b) / abs(b) for f, b in zip(run.objectives, best, strict=True))


def ladder(fn, pb: Problem, settings, reference: list[float], target: float, budget: float) -> list[Run]:
    """Run the settings in order until one reaches ``target`` against ``reference`` or the
    solver has spent ``budget`` seconds."""
    runs, spent = [], 0.0
    for setting in settings:
        run = timed(fn, pb, setting)
        runs.append(run)
        spent += run.seconds
        gap = subopt(run, reference) if reference else math.nan
        print(
            f"    {fn.__name__:>16} setting {setting:<8g} {run.seconds:8.2f} s  subopt {gap:.2e}", flush=True
        )
        if (reference and gap <= target) or spent > budget:
            break
    return runs


def summarize(
    name: str, runs: list[Run], best: list[float], target: float, pb: Problem, repeats: int, fn
) -> dict:
    hit = next((r for r in runs if subopt(r, best) <= target), None)
    final = hit or min(runs, key=lambda r: subopt(r, best))
    seconds = final.seconds
    if hit is not None and repeats > 1 and seconds < 60:
        seconds = statistics.median(
            [seconds] + [timed(fn, pb, hit.setting).seconds for _ in range(repeats - 1)]
        )
    coef, intercept = final.coefs[-1]
    row = {
        "solver": name,
        "reached": hit is not None,
        "seconds": seconds,
        "setting": final.setting,
        "subopt": subopt(final, best),
        "nonzeros": int(np.count_nonzero(coef)),
        "density": float(np.count_nonzero(coef) / coef.size),
        "test_accuracy": accuracy(pb, coef, intercept),
    }
    return row


def accuracy(pb: Problem, coef: np.ndarray, intercept: np.ndarray) -> float | None:
    if pb.X_test is None:
        return None
    scores = pb.X_test @ np.atleast_2d(coef).T + np.asarray(intercept).reshape(1, -1)
    if pb.loss == "logistic":
        return float(np.mean((scores[:, 0] > 0) == (pb.y_test > 0.5)))
    return float(np.mean(np.argmax(scores, 1) == pb.y_test))


# ---------------------------------------------------------------------------------------------
# The benchmark


TOLS = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-10]
OURS_TOLS = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9]
GLMNET_THRESH = [1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12]
SAGA_EPOCHS = [3, 10, 30, 100, 300, 1000, 3000]


def peers_for(pb: Problem, with_r: bool) -> list[tuple[str, object, list]]:
    peers = []
    if pb.loss == "logistic":
        peers += [("liblinear", run_liblinear, TOLS), ("skglm", run_skglm, TOLS), ("celer", run_celer, TOLS)]
        peers += [("saga", run_saga, SAGA_EPOCHS)]
    elif pb.loss == "multinomial":
        peers += [("saga", run_saga, SAGA_EPOCHS)]
    else:
        peers += [("sklearn lasso_path", run_sklearn_path, TOLS), ("skglm", run_skglm, TOLS)]
        peers += [("celer", run_celer, TOLS)]
    if with_r:
        peers.append(("glmnet", run_glmnet, GLMNET_THRESH))
    return peers


def warm_up(pb: Problem) -> None:
    """Compile / import every peer on a tiny slice so that warm timings exclude it (the cold
    table measures it instead)."""
    small = Problem(
        pb.name + "_warm",
        pb.loss,
        pb.X[:200, :50].copy(order="F"),
        pb.y[:200],
        pb.strengths[:3],
        pb.fit_intercept,
        info=pb.info,
    )
    if pb.loss != "squared" and len(np.unique(small.y)) < 2:
        return
    for fn in (run_ours, run_skglm, run_celer):
        if pb.loss == "multinomial" and fn is not run_ours:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(small, 1e-3)


def bench_problem(pb: Problem, target: float, repeats: int, budget: float, with_r: bool) -> dict:
    print(
        f"\n== {pb.name}: {pb.loss}, X {pb.X.shape}, {len(pb.strengths)} strength(s), target {target:g}",
        flush=True,
    )
    warm_up(pb)
    # sparsetrain's whole ladder runs: its tightest run is the reference the peers' ladders stop at.
    # The multinomial ladder starts where the target can be met (each of its runs takes minutes).
    tols = [t for t in OURS_TOLS if t >= target * 1e-3]
    if pb.loss == "multinomial":
        tols = [t for t in tols if t <= 10 * target][:3]
    runs = {"sparsetrain": ladder(run_ours, pb, tols, None, target, math.inf)}
    reference = [min(col) for col in zip(*(r.objectives for r in runs["sparsetrain"]), strict=True)]
    fns = {"sparsetrain": run_ours}
    for name, fn, settings in peers_for(pb, with_r):
        runs[name] = ladder(fn, pb, settings, reference, target, budget)
        fns[name] = fn
    best = [min(col) for col in zip(*(r.objectives for rs in runs.values() for r in rs), strict=True)]
    rows = [summarize(name, rs, best, target, pb, repeats, fns[name]) for name, rs in runs.items()]
    ours = rows[0]["seconds"]
    for row in rows:
        row["ratio"] = row["seconds"] / ours if row["reached"] else None
    note = None
    if pb.loss == "multinomial":
        note = "skglm, celer: one-vs-rest only (not the multinomial problem): not run"
    if not with_r:
        note = (note + "; " if note else "") + "glmnet skipped: Rscript with the glmnet package not found"
    return {
        "problem": pb.name,
        "shape": list(pb.X.shape),
        "strengths": len(pb.strengths),
        "target": target,
        "best_objective": best[-1],
        "rows": rows,
        "note": note,
        **pb.info,
    }


COLD_SCRIPT = r"""
import sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
X, y = np.load(sys.argv[1]), np.load(sys.argv[2])
X = np.asfortranarray(X)
strength, tol, which = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
from threadpoolctl import threadpool_limits
with threadpool_limits(1):
    t0 = time.perf_counter()
    if which == "sparsetrain":
        from sparsetrain.core.penalties import L1
        from sparsetrain.core.solvers import solve_linear
        solve_linear(X, y, loss="logistic", penalty=L1(strength), fit_intercept=False, tol=tol)
    elif which == "skglm":
        from skglm import SparseLogisticRegression
        SparseLogisticRegression(alpha=strength, tol=tol, fit_intercept=False, max_iter=100).fit(X, y)
    elif which == "celer":
        import celer
        celer.LogisticRegression(C=1 / (len(y) * strength), tol=tol, max_iter=100).fit(X, y)
    elif which == "liblinear":
        import sklearn
        from sklearn.linear_model import LogisticRegression
        v = tuple(int(p) for p in sklearn.__version__.split(".")[:2])
        l1 = {"l1_ratio": 1.0} if v >= (1, 8) else {"penalty": "l1"}
        LogisticRegression(**l1, C=1 / (len(y) * strength), solver="liblinear", fit_intercept=False,
                           tol=tol, max_iter=100000).fit(X, y)
    print(time.perf_counter() - t0)
"""


def bench_cold(pb: Problem, result: dict) -> list[dict]:
    """Import + first call in a fresh process, at the setting that reached the target warm."""
    np.save(TMP / "cold_X.npy", pb.X)
    np.save(TMP / "cold_y.npy", pb.y)
    (TMP / "cold.py").write_text(COLD_SCRIPT)
    rows = []
    for row in result["rows"]:
        if row["solver"] not in ("sparsetrain", "skglm", "celer", "liblinear") or not row["reached"]:
            continue
        cmd = [
            sys.executable,
            str(TMP / "cold.py"),
            str(TMP / "cold_X.npy"),
            str(TMP / "cold_y.npy"),
            repr(pb.strengths[0]),
            repr(row["setting"]),
            row["solver"],
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append({"solver": row["solver"], "seconds": float(out.stdout.strip().splitlines()[-1])})
        print(f"    cold {row['solver']:>12} {rows[-1]['seconds']:.2f} s", flush=True)
    ours = next(r["seconds"] for r in rows if r["solver"] == "sparsetrain")
    for r in rows:
        r["ratio"] = r["seconds"] / ours
    return rows


def fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def table(result: dict) -> str:
    head = (
        f"### {result['problem']}: X {result['shape'][0]} x {result['shape'][1]}, {result['strengths']} "
        f"strength(s), target {result['target']:g} relative\n\n"
    )
    lines = [
        "| solver | seconds | ratio | rel. subopt | setting | nonzeros | density | test acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        seconds = fmt(r["seconds"], ".2f") if r["reached"] else f"not reached ({r['seconds']:.1f} s)"
        lines.append(
            f"| {r['solver']} | {seconds} | {fmt(r['ratio'], '.2f')} | {r['subopt']:.1e} | "
            f"{r['setting']:g} | {r['nonzeros']} | {r['density']:.3f} | {fmt(r['test_accuracy'], '.4f')} |"
        )
    text = head + "\n".join(lines)
    if result.get("cold"):
        text += "\n\nFresh process (import + first call), binary problem:\n\n| solver | seconds | ratio |\n|---|---:|---:|\n"
        text += "\n".join(
            f"| {r['solver']} | {r['seconds']:.2f} | {r['ratio']:.2f} |" for r in result["cold"]
        )
    if result.get("note"):
        text += f"\n\nNote: {result['note']}."
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="subsets, tolerance 1e-4: under two minutes")
    ap.add_argument("--only", default="binary,multinomial,path", help="comma-separated problems")
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON output (default benchmarks/results/solvers.json)"
    )
    args = ap.parse_args(argv)
    quick = args.quick
    target, repeats, budget = (1e-4, 1, 8.0) if quick else (1e-6, 3, 300.0)
    with_r = glmnet_available()
    if not with_r:
        print(
            "note: Rscript with the glmnet package not found (Debian: apt-get install r-cran-glmnet); glmnet skipped"
        )
    t_start = time.perf_counter()
    info_machine = machine()
    results = []
    only = args.only.split(",")
    if "binary" in only:
        pb = binary_problem(3000 if quick else None)
        res = bench_problem(pb, target, repeats, budget, with_r)
        res["cold"] = bench_cold(pb, res)
        results.append(res)
    if "multinomial" in only:
        pb = multinomial_problem(3000 if quick else None)
        results.append(bench_problem(pb, target, 1, budget, with_r))
    if "path" in only:
        pb = path_problem(*((2000, 1000, 10) if quick else (10000, 5000, 50)))
        results.append(bench_problem(pb, target, repeats, budget, with_r))
    wall = time.perf_counter() - t_start
    print("\n" + "\n\n".join(table(r) for r in results))
    print(f"\nratio = peer seconds / sparsetrain seconds (> 1: sparsetrain faster); wall {wall:.0f} s")
    out = args.out or RESULTS / ("solvers_quick.json" if quick else "solvers.json")
    meta = {
        "date": time.strftime("%Y-%m-%d"), "machine": info_machine, "quick": quick, "wall_seconds": wall, "threads": 1,
    }
    write_json(out, {"meta": meta, "results": results}, default=float)
    print(f"saved {out}")
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
