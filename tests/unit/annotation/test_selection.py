"""Uncertainty scores and batch choice of active-learning selections (no services)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from kiln_annotation.selection import Candidate, choose, model_input, thumbnail, uncertainty


def answer(*probabilities: float) -> dict[str, object]:
    names = [f"c{i}" for i in range(len(probabilities))]
    top = int(np.argmax(probabilities))
    return {
        "label": names[top],
        "confidence": max(probabilities),
        "probabilities": dict(zip(names, probabilities, strict=True)),
    }


def test_each_strategy_scores_an_even_answer_above_a_sure_one() -> None:
    sure, even = answer(0.9, 0.05, 0.05), answer(0.4, 0.35, 0.25)
    for strategy in ("least-confidence", "margin", "entropy"):
        assert uncertainty(even, strategy) > uncertainty(sure, strategy), strategy
    assert uncertainty(sure, "least-confidence") == pytest.approx(0.1)
    assert uncertainty(sure, "margin") == pytest.approx(1 - 0.85)
    uniform = answer(0.25, 0.25, 0.25, 0.25)
    assert uncertainty(uniform, "entropy") == pytest.approx(1.0)
    expected = -(0.9 * math.log(0.9) + 2 * 0.05 * math.log(0.05)) / math.log(3)
    assert uncertainty(sure, "entropy") == pytest.approx(expected)


def test_margin_and_entropy_tell_apart_what_least_confidence_cannot() -> None:
    # Same top probability; one answer hesitates between two classes, the other does not.
    torn, spread = answer(0.5, 0.48, 0.02), answer(0.5, 0.25, 0.25)
    assert uncertainty(torn, "least-confidence") == uncertainty(spread, "least-confidence")
    assert uncertainty(torn, "margin") > uncertainty(spread, "margin")
    assert uncertainty(spread, "entropy") > uncertainty(torn, "entropy")


def test_detectors_are_scored_by_the_box_policy_and_missing_probabilities_refused() -> None:
    boxes = {"label": "3", "confidence": 0.3, "detections": [{"label": "3", "score": 0.3}]}
    for strategy in ("least-confidence", "margin", "entropy"):
        assert uncertainty(boxes, strategy) == pytest.approx(0.7)
    only_top = {"label": "a", "confidence": 0.8}
    assert uncertainty(only_top, "least-confidence") == pytest.approx(0.2)
    with pytest.raises(ValueError, match="needs every class's probability"):
        uncertainty(only_top, "margin")


def _png(pattern: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pattern.astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def test_diversity_skips_near_duplicates_that_plain_ranking_takes() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (16, 16))
    other = rng.integers(0, 255, (16, 16))
    twins = [thumbnail(_png(np.clip(base + d, 0, 255))) for d in (0, 2, 4)]
    distinct = thumbnail(_png(other))
    candidates = [
        Candidate("twin-a", 0.95, twins[0]),
        Candidate("twin-b", 0.94, twins[1]),
        Candidate("twin-c", 0.93, twins[2]),
        Candidate("other", 0.80, distinct),
        Candidate("sure", 0.05, thumbnail(_png(rng.integers(0, 255, (16, 16))))),
    ]
    plain = [c.item_id for c in choose(candidates, 2, False, 0, "margin")]
    assert plain == ["twin-a", "twin-b"]
    diverse = [c.item_id for c in choose(candidates, 2, True, 0, "margin")]
    assert diverse == ["twin-a", "other"]
    drawn = [c.item_id for c in choose(candidates, 3, False, 7, "random")]
    assert len(set(drawn)) == 3 and drawn == [
        c.item_id for c in choose(candidates, 3, False, 7, "random")
    ]
    assert thumbnail(b"not an image") is None


def test_every_task_types_items_go_to_predict_as_it_takes_them() -> None:
    assert model_input("image/png", b"\x89PNG") == "iVBORw=="
    assert model_input("text/plain; charset=utf-8", "ça va".encode()) == "ça va"
    assert model_input("application/json", b"[5.1, 3.5]") == pytest.approx([5.1, 3.5])
    assert model_input("text/csv", b"1,2,3") == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="numbers"):
        model_input("text/csv", b"a,b")
