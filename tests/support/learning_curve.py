"""Pool-based active learning on scikit-learn's digits with Kiln's selection strategies
(:mod:`kiln_annotation.selection`): a logistic regression is refitted after each batch of
labels, and each strategy's curve is its test accuracy against the labels it used.

Everything is seeded: the split, the first batch (the same random items for every
strategy), the model and random's draws. Used by the learning-curve test and by
``tools/render_learning_curve.py``, which writes ``docs/active-learning.md``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from kiln_annotation.selection import Candidate, choose, uncertainty

STRATEGIES = ("random", "least-confidence", "margin", "entropy")
FIRST, BATCH, ROUNDS = 20, 20, 14
TEST = 500


@dataclass
class Curve:
    strategy: str
    labels: list[int]
    accuracy: list[float]

    def labels_to_reach(self, target: float) -> int | None:
        return next(
            (n for n, a in zip(self.labels, self.accuracy, strict=True) if a >= target), None
        )


def curve(strategy: str, seed: int, diversity: bool = False) -> Curve:
    digits = load_digits()
    x, y = digits.data / 16.0, digits.target
    order = np.random.default_rng(seed).permutation(len(y))
    test, pool = order[:TEST], order[TEST:]
    labelled = list(pool[:FIRST])
    unlabelled = list(pool[FIRST:])
    labels, accuracy = [], []
    for round_ in range(ROUNDS + 1):
        model = LogisticRegression(max_iter=300)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x[labelled], y[labelled])
        labels.append(len(labelled))
        accuracy.append(float((model.predict(x[test]) == y[test]).mean()))
        if round_ == ROUNDS:
            break
        probabilities = model.predict_proba(x[unlabelled])
        candidates = []
        for index, row in zip(unlabelled, probabilities, strict=True):
            answer = {
                "confidence": float(row.max()),
                "probabilities": {
                    str(c): float(p) for c, p in zip(model.classes_, row, strict=True)
                },
            }
            score = 0.0 if strategy == "random" else uncertainty(answer, strategy)
            feature = x[index] - x[index].mean()
            feature = feature / (np.linalg.norm(feature) or 1.0)
            candidates.append(Candidate(str(index), score, feature))
        chosen = {
            int(c.item_id) for c in choose(candidates, BATCH, diversity, seed + round_, strategy)
        }
        labelled += sorted(chosen)
        unlabelled = [i for i in unlabelled if i not in chosen]
    return Curve(strategy + (" + diversity" if diversity else ""), labels, accuracy)


def mean_curves(seeds: range) -> list[Curve]:
    """Each strategy's accuracy averaged over ``seeds`` (and margin with diversity)."""
    out = []
    for strategy, diversity in [*((s, False) for s in STRATEGIES), ("margin", True)]:
        runs = [curve(strategy, seed, diversity) for seed in seeds]
        out.append(
            Curve(
                runs[0].strategy,
                runs[0].labels,
                [float(np.mean([r.accuracy[i] for r in runs])) for i in range(len(runs[0].labels))],
            )
        )
    return out
