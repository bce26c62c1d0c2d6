"""The champion / challenger rule of a retrain: whether the challenger replaces the champion.

Pure: scores in, a :class:`Decision` out; the retrain pipeline gathers the scores and
:mod:`sparsetrain.tracking` records the decision and moves the aliases.

The rule, in order:

1. the challenger has every metric, each finite, and is registrable (not degenerate, see
   :func:`sparsetrain.scoring.degenerate_reason`), else ``kept``;
2. ``max_density``, when set, holds, else ``kept``;
3. no champion yet: ``first``;
4. a champion that cannot score the current data is ``kept`` (a schema change is a decision for
   a person, not for a schedule);
5. ``promoted`` when the challenger improves the metric (higher, or lower for a minimized one)
   by more than 0 and by at least ``min_delta``; else ``kept``. A tie keeps the champion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

FIRST, PROMOTED, KEPT, ROLLED_BACK = "first", "promoted", "kept", "rolled_back"


def promotes(outcome: str) -> bool:
    """Whether a decision makes the challenger the champion."""
    return outcome in (FIRST, PROMOTED)


@dataclass(frozen=True)
class Rule:
    metric: str
    minimize: bool
    min_delta: float = 0.0
    max_density: float | None = None


@dataclass(frozen=True)
class Decision:
    outcome: str  # first | promoted | kept
    reason: str
    champion_score: float | None
    challenger_score: float | None

    @property
    def promotes(self) -> bool:
        return promotes(self.outcome)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def missing_metrics(metrics: Mapping[str, float], required: tuple[str, ...]) -> list[str]:
    """The required metrics that are absent or not finite."""
    return [k for k in required if k not in metrics or not math.isfinite(float(metrics[k]))]


def decide(
    rule: Rule,
    challenger: Mapping[str, float],
    required: tuple[str, ...],
    has_champion: bool,
    champion_score: float | None,
    champion_error: str | None = None,
    not_registrable: str | None = None,
) -> Decision:
    """Apply the rule (module docstring) to the challenger's metrics and the champion's score on
    the same test rows."""
    score = challenger.get(rule.metric)
    score = float(score) if score is not None and math.isfinite(float(score)) else None

    def kept(reason: str) -> Decision:
        return Decision(KEPT, reason, champion_score, score)

    missing = missing_metrics(challenger, (rule.metric, "density", *required))
    if missing:
        return kept(f"the challenger's run lacks finite metrics {', '.join(missing)}")
    if not_registrable:
        return kept(f"the challenger is not registrable: {not_registrable}")
    density = float(challenger["density"])
    if rule.max_density is not None and density > rule.max_density:
        return kept(
            f"the challenger's density {density:.4f} exceeds retrain.max_density {rule.max_density:g}"
        )
    if not has_champion:
        return Decision(FIRST, "no champion yet: the challenger is the first", None, score)
    if champion_score is None:
        return kept(
            f"the champion cannot score the current data ({champion_error or 'no score'}); promote by hand "
            "if the data changed on purpose"
        )
    gain = (champion_score - score) if rule.minimize else (score - champion_score)
    better = "lower" if rule.minimize else "higher"
    if gain > 0 and gain >= rule.min_delta:
        return Decision(
            PROMOTED, f"{rule.metric} {score:.6f} vs {champion_score:.6f}: {gain:.6f} {better}, "
            f">= retrain.min_delta {rule.min_delta:g}", champion_score, score,
        )
    return kept(
        f"{rule.metric} {score:.6f} vs the champion's {champion_score:.6f}: not {better} by more than 0 "
        f"and by at least retrain.min_delta {rule.min_delta:g}"
    )
