"""Uncertainty-ranked batches reach a given accuracy on the digits with fewer labels than
random batches (the curves are in docs/active-learning.md)."""

from __future__ import annotations

from tests.support.learning_curve import mean_curves

TARGET = 0.93  # test accuracy on 500 held-out digits


def test_uncertainty_ranked_batches_need_fewer_labels_than_random_ones() -> None:
    curves = {c.strategy: c for c in mean_curves(range(3))}
    random = curves["random"].labels_to_reach(TARGET)
    assert random is not None, curves["random"]
    for strategy in ("least-confidence", "margin", "entropy", "margin + diversity"):
        needed = curves[strategy].labels_to_reach(TARGET)
        assert needed is not None and needed < random, (strategy, needed, random)
    # Over the whole curve (mean accuracy across the batch sizes) the ranked ones are ahead.
    base = sum(curves["random"].accuracy)
    assert sum(curves["margin"].accuracy) > base and sum(curves["least-confidence"].accuracy) > base
