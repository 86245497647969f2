"""Classification metrics of a trained model on the evaluation split.

Macro averages are unweighted means over every label of the label map; a label's precision is 0
when nothing was predicted as it, its recall 0 when it has no true items, and F1 0 when both
precision and recall are 0 (scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel

MAX_BAD_CASES = 1000


class ClassMetrics(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class BadCase(BaseModel):
    """A misclassified evaluation item, for review."""

    item_id: str
    label: str
    predicted: str
    confidence: float  # softmax probability of the predicted label


class EvaluationReport(BaseModel):
    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]  # confusion[true][predicted], in label_map order
    labels: list[str]
    bad_cases: list[BadCase]
    bad_cases_total: int  # bad_cases keeps at most MAX_BAD_CASES, most confident first
    support: int


def confusion_matrix(
    targets: Sequence[int] | torch.Tensor, predicted: Sequence[int] | torch.Tensor, n: int
) -> list[list[int]]:
    """``matrix[t][p]`` = number of items of true class ``t`` predicted as ``p``."""
    t = torch.as_tensor(targets, dtype=torch.int64)
    p = torch.as_tensor(predicted, dtype=torch.int64)
    counts = torch.bincount(t * n + p, minlength=n * n).reshape(n, n)
    return [[int(v) for v in row] for row in counts.tolist()]


def evaluate(
    logits: torch.Tensor,
    targets: torch.Tensor,
    labels: list[str],
    item_ids: list[str],
    max_bad_cases: int = MAX_BAD_CASES,
) -> EvaluationReport:
    """Metrics of ``logits`` ``[N, len(labels)]`` against class indices ``targets``."""
    n = len(labels)
    probs = torch.softmax(logits.float(), dim=1) if len(logits) else logits.float()
    confidence, predicted = probs.max(dim=1) if len(logits) else (probs[:, 0], targets)
    matrix = confusion_matrix(targets, predicted, n)
    per_class: dict[str, ClassMetrics] = {}
    for c, name in enumerate(labels):
        tp = matrix[c][c]
        support = sum(matrix[c])
        predicted_c = sum(row[c] for row in matrix)
        precision = tp / predicted_c if predicted_c else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = ClassMetrics(precision=precision, recall=recall, f1=f1, support=support)
    total = len(item_ids)
    correct = sum(matrix[c][c] for c in range(n))
    wrong = (predicted != targets).nonzero().flatten().tolist()
    # The most confident mistakes are the most telling (and likeliest label errors).
    wrong.sort(key=lambda i: (-float(confidence[i]), item_ids[i]))
    bad = [
        BadCase(
            item_id=item_ids[i],
            label=labels[int(targets[i])],
            predicted=labels[int(predicted[i])],
            confidence=float(confidence[i]),
        )
        for i in wrong[:max_bad_cases]
    ]
    return EvaluationReport(
        accuracy=correct / total if total else 0.0,
        precision_macro=_mean([m.precision for m in per_class.values()]),
        recall_macro=_mean([m.recall for m in per_class.values()]),
        f1_macro=_mean([m.f1 for m in per_class.values()]),
        per_class=per_class,
        confusion=matrix,
        labels=list(labels),
        bad_cases=bad,
        bad_cases_total=len(wrong),
        support=total,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
