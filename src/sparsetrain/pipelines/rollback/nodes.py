"""Rollback: put the previous champion back (``kedro run --pipelines rollback``).

Recorded as a retrain is: run tag ``retrain_decision: rolled_back``, ``retrain/decision.json``,
tags on both versions; the alias move is the last step. The project hook holds the model's
retrain lock, so that a rollback and a retrain never interleave.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sparsetrain import tracking
from sparsetrain.config import SparsetrainConfig
from sparsetrain.errors import SparsetrainError
from sparsetrain.promotion import ROLLED_BACK

logger = logging.getLogger(__name__)


def roll_back(run: SparsetrainConfig) -> dict[str, Any]:
    """``champion`` back to the ``previous_champion`` version, recorded first, moved last."""
    name = run.registry.name_for(run.data.task)
    previous = tracking.alias_version(name, tracking.PREVIOUS_CHAMPION)
    if previous is None:
        raise SparsetrainError(
            f"model '{name}' has no '{tracking.PREVIOUS_CHAMPION}' version, so there is nothing to roll "
            "back to (a retrain sets it when it promotes a challenger)"
        )
    champion = tracking.alias_version(name, tracking.CHAMPION)
    restored, replaced = str(previous.version), str(champion.version) if champion else None
    run_id = tracking.active_run_id()
    record = {
        "decision": ROLLED_BACK,
        "model_name": name,
        "reason": f"rollback: version {restored} is the champion again",
        "champion": {"version": restored, "run_id": previous.run_id},
        "replaced": {"version": replaced, "run_id": champion.run_id if champion else None},
    }
    tracking.set_run_tags(
        run_id, {"retrain_decision": ROLLED_BACK, "retrain_model": name, "retrain_reason": record["reason"]}
    )
    folder = tracking.run_folder(run_id) / "retrain"
    folder.mkdir(exist_ok=True)
    (folder / "decision.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    tracking.log_folder(run_id, folder, artifact_path="retrain")
    tracking.set_version_tags(name, restored, {"restored_by_run": run_id})
    if replaced is not None:
        tracking.set_version_tags(name, replaced, {"rolled_back_by_run": run_id})
    tracking.restore_previous_champion(name, restored)
    logger.info("'%s': champion back to version %s (was %s)", name, restored, replaced)
    return record
