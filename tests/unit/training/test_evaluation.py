"""Evaluation metrics against hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from kiln_training.evaluation import confusion_matrix, evaluate


def _logits_for(
    predicted: list[int], n: int, confidence: list[float] | None = None
) -> torch.Tensor:
    logits = torch.zeros(len(predicted), n)
    for i, p in enumerate(predicted):
        logits[i, p] = 5.0 if confidence is None else confidence[i]
    return logits


def test_confusion_matrix_rows_are_true_labels() -> None:
    assert confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3) == [
        [1, 1, 0],
        [0, 1, 0],
        [1, 0, 2],
    ]


def test_macro_metrics_match_a_hand_computed_example() -> None:
    # true:      a a a b b c
    # predicted: a a b b c c
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = [0, 0, 1, 1, 2, 2]
    report = evaluate(
        _logits_for(predicted, 3), targets, ["a", "b", "c"], [f"i{i}" for i in range(6)]
    )
    # a: P 2/2, R 2/3, F1 0.8 · b: P 1/2, R 1/2, F1 0.5 · c: P 1/2, R 1/1, F1 2/3
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.precision_macro == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert report.recall_macro == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert report.f1_macro == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report.per_class["a"].support == 3
    assert report.per_class["c"].f1 == pytest.approx(2 / 3)
    assert report.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report.labels == ["a", "b", "c"]
    assert {(b.item_id, b.label, b.predicted) for b in report.bad_cases} == {
        ("i2", "a", "b"),
        ("i4", "b", "c"),
    }
    assert report.bad_cases_total == 2


def test_a_label_never_predicted_or_never_present_scores_zero_not_nan() -> None:
    targets = torch.tensor([0, 0, 1])
    report = evaluate(_logits_for([0, 0, 0], 3), targets, ["a", "b", "c"], ["x", "y", "z"])
    assert report.per_class["b"].precision == 0.0 and report.per_class["b"].recall == 0.0
    assert report.per_class["c"].support == 0 and report.per_class["c"].f1 == 0.0
    assert report.per_class["a"].precision == pytest.approx(2 / 3)
    assert all(not math.isnan(v) for v in (report.precision_macro, report.f1_macro))


def test_bad_cases_carry_confidence_most_confident_first_and_are_capped() -> None:
    targets = torch.tensor([0, 0, 0])
    logits = _logits_for([1, 1, 0], 2, confidence=[1.0, 3.0, 2.0])
    report = evaluate(logits, targets, ["a", "b"], ["p", "q", "r"], max_bad_cases=1)
    assert report.bad_cases_total == 2
    (worst,) = report.bad_cases
    assert worst.item_id == "q"
    assert worst.confidence == pytest.approx(math.exp(3) / (math.exp(3) + 1))
    dumped = report.model_dump()
    assert dumped["bad_cases"][0]["item_id"] == "q"


def test_an_empty_evaluation_set_gives_zero_metrics() -> None:
    report = evaluate(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64), ["a", "b"], [])
    assert report.accuracy == 0.0 and report.support == 0 and report.bad_cases == []
