"""The study's verdicts and its report: a section per claim with the settings compared, the
metric's mean and 95% interval over seeds, the paired test, the verdict, and a figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sparsetrain.core.cv import summarize
from sparsetrain.core.stats import DOES_NOT_HOLD, INCONCLUSIVE, Verdict, better, combine, differ, within

from .design import CLAIMS, Claim

REPORT = "report.md"


def machine() -> str:
    """The machine the wall time was measured on: CPU model and cores."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def _paired(records: pd.DataFrame, dataset: str, first: str, second: str, metric: str) -> np.ndarray:
    """Per-seed ``first - second`` of ``metric`` on ``dataset``, over the seeds both have."""
    rows = records[records["dataset"] == dataset]
    a = rows[rows["setting"] == first].set_index("seed")[metric]
    b = rows[rows["setting"] == second].set_index("seed")[metric]
    common = a.index.intersection(b.index)
    return (a[common] - b[common]).to_numpy(dtype=np.float64)


def judge(claim: Claim, records: pd.DataFrame, dataset: str) -> tuple[str, list[tuple[str, Verdict]]]:
    """The claim's verdict on one dataset, and the verdict of each comparison it is made of."""
    parts: list[tuple[str, Verdict]] = []
    pairs = claim.pairs
    for first, second in pairs:
        d = claim.sign * _paired(records, dataset, first, second, claim.metric)
        if claim.kind == "within":
            verdict = within(d, claim.margin)
        elif claim.kind == "differ":
            verdict = differ(d, alpha=0.05 / len(pairs))  # Bonferroni over the pairs
        else:
            verdict = better(d)
        parts.append((f"{first} vs {second}", verdict))
    if claim.kind == "differ":  # the method matters when any pair differs
        overall = "holds" if any(v.verdict == "holds" for _, v in parts) else INCONCLUSIVE
    else:
        overall = combine([v for _, v in parts])
    if claim.condition is not None and overall != DOES_NOT_HOLD:
        setting, check = claim.condition
        rows = records[(records["dataset"] == dataset) & (records["setting"] == setting)]
        failures = [check(row) for row in rows.to_dict("records")]
        failed = [f for f in failures if f]
        if failed:
            overall = DOES_NOT_HOLD
            parts.append((f"{setting}: {failed[0]}", parts[0][1]))
    return overall, parts


def claim_table(claim: Claim, records: pd.DataFrame, dataset: str) -> pd.DataFrame:
    rows = []
    for setting in claim.settings:
        subset = records[(records["dataset"] == dataset) & (records["setting"] == setting)]
        if subset.empty:
            continue
        row: dict[str, Any] = {"setting": setting, "seeds": len(subset)}
        for metric in (claim.metric, *claim.also):
            if metric in subset and subset[metric].notna().all():
                s = summarize(subset[metric].to_list())
                row[metric] = f"{s.mean:.4g} [{s.ci95_low:.4g}, {s.ci95_high:.4g}]"
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    lines = [header, "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def plot_claim(claim: Claim, records: pd.DataFrame, datasets: list[str], path: Path) -> None:
    """Mean and 95% interval of the claim's metric per setting, one panel per dataset, seeds as dots."""
    from sparsetrain.reporting import plt

    figure, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for i, setting in enumerate(claim.settings):
            values = records[(records["dataset"] == dataset) & (records["setting"] == setting)][claim.metric]
            values = values[np.isfinite(values)]
            if values.empty:
                continue
            s = summarize(values.to_list())
            error = [[s.mean - s.ci95_low], [s.ci95_high - s.mean]]
            ax.errorbar([i], [s.mean], yerr=error, fmt="o", capsize=4)
            ax.scatter(np.full(len(values), i + 0.15), values, s=8, alpha=0.5, color="gray")
        ax.set_xticks(range(len(claim.settings)), claim.settings, rotation=20, fontsize=7)
        ax.set_title(f"{claim.key} on {dataset}", fontsize=9)
        ax.set_ylabel(claim.metric, fontsize=8)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_report(
    records: pd.DataFrame, folder: Path, header: dict[str, Any], skipped: list[str]
) -> dict[str, dict[str, str]]:
    """``report.md`` and ``C<k>.png`` into ``folder``; returns the verdict per claim and dataset."""
    folder.mkdir(parents=True, exist_ok=True)
    verdicts: dict[str, dict[str, str]] = {}
    lines = [
        "# Study of the method's claims",
        "",
        f"Command: `{header['command']}`  ",
        f"Wall time: {header['wall_seconds']:.0f} s on {machine()}; preset `{header['preset']}`, seeds "
        f"{header['seeds']}, datasets {', '.join(header['datasets'])}; {header['runs']} training runs.  ",
        f"Each run: the project's recipe (Adam, cosine LR, early stopping on validation loss unless a "
        f"setting says otherwise), at most {header['epochs']} epochs, a 70/10/20 stratified split per seed"
        + (f"; Fashion-MNIST: the first {header['fashion_train_rows']} training images (class-balanced) "
           "and the 10,000 t10k images, split the same way" if "fashion_mnist" in header["datasets"] else "")
        + ".  ",
        "Verdicts are computed from the data: paired t tests over seeds (same split and initialization "
        "stream per seed), alpha 0.05, one-sided in the claimed direction; `holds` = significant in the "
        "claimed direction, `does not hold` = significant the other way (or worse than the margin), "
        "`inconclusive` = neither. Intervals are 95% t intervals over seeds.",
    ]
    if header.get("rebuilt_from"):
        source = header["rebuilt_from"]
        lines += ["", f"Rebuilt with `study.summarize_only=true` from the measurements of run {source}."]
    if skipped:
        lines += ["", f"Skipped: {'; '.join(skipped)}."]
    header_lines, lines = lines, []
    for claim in CLAIMS:
        datasets = [d for d in (claim.datasets or header["datasets"]) if (records["dataset"] == d).any()]
        lines += ["", f"## {claim.key}: {claim.statement}", ""]
        verdicts[claim.key] = {}
        if not datasets:
            lines.append(f"**{claim.key} verdict: inconclusive** (no data)")
            verdicts[claim.key]["all"] = INCONCLUSIVE
            continue
        for dataset in datasets:
            overall, parts = judge(claim, records, dataset)
            verdicts[claim.key][dataset] = overall
            lines += [f"**{claim.key} on {dataset}: {overall}** (metric `{claim.metric}`"
                      f"{', lower is better' if claim.sign < 0 else ''})", ""]
            for name, v in parts:
                ci = ", ".join("nan" if math.isnan(x) else f"{x:.4g}" for x in v.ci95)
                lines.append(f"- {name}: {v.verdict}; mean difference {v.mean_difference:.4g} [{ci}], "
                             f"n = {v.n}, {v.test}, {v.detail}")
            lines += ["", _markdown(claim_table(claim, records, dataset)), ""]
        plot_claim(claim, records, datasets, folder / f"{claim.key}.png")
        lines.append(f"![{claim.key}]({claim.key}.png)")
    summary = ["", "| claim | " + " | ".join(header["datasets"]) + " | other data |", "|---|" + "---|" * (
        len(header["datasets"]) + 1)]
    for claim in CLAIMS:
        found = verdicts[claim.key]
        cells = [found.get(d, "") for d in header["datasets"]]
        other = "; ".join(f"{d}: {v}" for d, v in found.items() if d not in header["datasets"])
        summary.append(f"| {claim.key} | " + " | ".join(cells) + f" | {other} |")
    (folder / REPORT).write_text("\n".join(header_lines + summary + lines) + "\n")
    return verdicts
