"""The champion / challenger rule, case by case (pure: no store)."""

from __future__ import annotations

import math

import pytest

from sparsetrain.promotion import FIRST, KEPT, PROMOTED, Rule, decide, promotes

ACCURACY = Rule("test_accuracy", minimize=False)
RMSE = Rule("test_rmse", minimize=True)


def metrics(**values: float) -> dict[str, float]:
    return {"density": 0.2, "test_accuracy": 0.9, "test_chance_accuracy": 0.1, **values}


def test_no_champion_makes_the_first():
    decision = decide(ACCURACY, metrics(), (), has_champion=False, champion_score=None)
    assert decision.outcome == FIRST and decision.promotes and decision.challenger_score == 0.9


@pytest.mark.parametrize(
    "rule, challenger, champion, outcome",
    [
        (ACCURACY, 0.91, 0.90, PROMOTED),
        (ACCURACY, 0.90, 0.90, KEPT),  # a tie keeps the champion
        (ACCURACY, 0.89, 0.90, KEPT),
        (Rule("test_accuracy", False, min_delta=0.02), 0.91, 0.90, KEPT),
        (Rule("test_accuracy", False, min_delta=0.02), 0.92, 0.90, PROMOTED),
        (RMSE, 1.5, 2.0, PROMOTED),  # lower is better
        (RMSE, 2.5, 2.0, KEPT),
    ],
)
def test_promotes_only_on_an_improvement_of_at_least_min_delta(rule, challenger, champion, outcome):
    scores = metrics(**{rule.metric: challenger})
    decision = decide(rule, scores, (), has_champion=True, champion_score=champion)
    assert decision.outcome == outcome, decision.reason
    assert decision.champion_score == champion and decision.challenger_score == challenger


def test_max_density_holds_even_for_the_first():
    rule = Rule("test_accuracy", False, max_density=0.1)
    for has_champion in (False, True):
        decision = decide(rule, metrics(test_accuracy=0.99), (), has_champion, 0.5)
        assert decision.outcome == KEPT and "max_density" in decision.reason


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_a_challenger_without_every_finite_metric_is_kept(bad):
    scores = metrics(test_f1_macro=bad) if bad is not None else {"density": 0.2, "test_accuracy": 0.99}
    decision = decide(ACCURACY, scores, ("test_accuracy", "test_f1_macro"), True, 0.5)
    assert decision.outcome == KEPT and "test_f1_macro" in decision.reason


def test_a_degenerate_challenger_is_kept_with_the_reason():
    decision = decide(ACCURACY, metrics(), (), False, None, not_registrable="density 0")
    assert decision.outcome == KEPT and "density 0" in decision.reason


def test_a_champion_that_cannot_score_the_data_is_kept():
    decision = decide(ACCURACY, metrics(test_accuracy=1.0), (), True, None, "MlflowException: missing column 'x'")
    assert decision.outcome == KEPT and "missing column 'x'" in decision.reason


def test_only_first_and_promoted_promote():
    assert [promotes(o) for o in (FIRST, PROMOTED, KEPT, "rolled_back")] == [True, True, False, False]
