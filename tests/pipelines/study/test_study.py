"""The study: its design is consistent, its verdicts follow the data, and the quick study runs end
to end through `kedro run`, logged to MLflow, and rebuilds from its records without training."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from kedro_project import kedro_run
from sparsetrain.config import StudyConfig
from sparsetrain.pipelines.study import design, report


def test_every_claim_compares_known_settings_on_its_metric():
    assert [c.key for c in design.CLAIMS] == [f"C{k}" for k in range(1, 9)]
    for claim in design.CLAIMS:
        assert set(claim.settings) <= set(design.SETTINGS)
        assert all(a in claim.settings and b in claim.settings for a, b in claim.pairs)
        assert claim.kind in ("better", "within", "differ")


def test_the_plan_trains_each_setting_once_per_dataset_and_skips_absent_data():
    study = StudyConfig(datasets=("digits", "fashion_mnist"))
    pairs = design.plan(study, lambda name: name != "fashion_mnist")
    assert len(pairs) == len(set(pairs))
    assert {d for d, _ in pairs} == {"digits", "correlated_groups"}
    assert ("correlated_groups", "group_l1") in pairs and ("digits", "group_l1") not in pairs


def records_for(claim: design.Claim, values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"dataset": "digits", "setting": s, "seed": i, claim.metric: v}
            for s, vs in values.items() for i, v in enumerate(vs)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "l1, verdict",
    [([0.30, 0.32, 0.31, 0.29, 0.33], "holds"), ([0.0, 0.001, 0.0, 0.0, 0.002], "inconclusive")],
)
def test_a_claims_verdict_follows_constructed_measurements(l1, verdict):
    c1 = design.CLAIMS[0]
    records = records_for(c1, {"l1": l1, "l2": [0.0, 0.0, 0.0, 0.001, 0.001]})
    assert report.judge(c1, records, "digits")[0] == verdict


def test_a_condition_that_fails_refutes_the_claim():
    c6 = next(c for c in design.CLAIMS if c.key == "C6")
    records = records_for(c6, {"mlp_dense": [0.95] * 5, "mlp_gmp10": [0.95, 0.951, 0.949, 0.95, 0.95]})
    records["bytes_dense"] = 1000.0
    records["bytes_sparse"] = np.where(records["setting"] == "mlp_gmp10", 500.0, 1000.0)
    verdict, parts = report.judge(c6, records, "digits")
    assert verdict == "does not hold" and "stored bytes saved 50.0%" in parts[-1][0]
    records["bytes_sparse"] = 100.0
    assert report.judge(c6, records, "digits")[0] == "holds"


@pytest.mark.slow
def test_the_quick_study_end_to_end(project):
    result = kedro_run(project, "study.preset=quick", args=("--pipelines", "study"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    text = (project / "data" / "08_reporting" / "study" / "report.md").read_text()
    verdicts = re.findall(r"\*\*(C\d) on [a-z_]+: (holds|does not hold|inconclusive)\*\*", text)
    assert sorted({claim for claim, _ in verdicts}) == [f"C{k}" for k in range(1, 9)]
    assert "paired t test over seeds" in text and "Wall time" in text
    runs = mlflow.search_runs(search_all_experiments=True)
    parent = runs[runs["tags.mlflow.parentRunId"].isna()].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent.run_id]
    assert len(children) == 2 * len(design.plan(StudyConfig(preset="quick"), lambda name: True))
    assert set(children["tags.study_seed"]) == {"0", "1"}
    logged = {a.path for a in MlflowClient().list_artifacts(parent.run_id, "study")}
    assert {"study/report.md", "study/C1.png", "study/measurements.csv"} <= logged
    assert parent["tags.study_C1"].startswith("digits: ")

    again = kedro_run(project, "study.preset=quick,study.summarize_only=true", args=("--pipelines", "study"))
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    rebuilt = (project / "data" / "08_reporting" / "study" / "report.md").read_text()
    assert re.findall(r"\*\*(C\d) on [a-z_]+: (holds|does not hold|inconclusive)\*\*", rebuilt) == verdicts
    assert len(mlflow.search_runs(search_all_experiments=True)) == len(runs) + 1  # no training
