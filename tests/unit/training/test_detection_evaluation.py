"""Kiln's detection metrics against pycocotools' COCOeval run independently on the same
predictions, and the bad-case rules."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kiln_training.detection_evaluation import ImageBoxes, box_iou, evaluate_detections

LABELS = ["cat", "dog", "fox"]


def _scene(seed: int, images: int = 30) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    """Truth boxes and noisy predictions: jittered true boxes (some relabelled, some
    dropped) plus random false boxes, all with random scores."""
    rng = np.random.default_rng(seed)
    truth, predicted = [], []
    for i in range(images):
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, 5))):
            x, y = rng.uniform(0, 80, 2)
            w, h = rng.uniform(8, 40, 2)
            boxes.append([x, y, min(x + w, 120.0), min(y + h, 100.0)])
            labels.append(int(rng.integers(0, len(LABELS))))
        truth.append(ImageBoxes(f"img-{i}", 120, 100, boxes, labels))
        pboxes, plabels, scores = [], [], []
        for box, label in zip(boxes, labels, strict=True):
            if rng.random() < 0.2:
                continue  # missed
            jitter = rng.normal(0, 3, 4)
            pboxes.append([float(v) for v in np.asarray(box) + jitter])
            plabels.append(label if rng.random() < 0.85 else int(rng.integers(0, len(LABELS))))
            scores.append(float(rng.uniform(0.3, 1.0)))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 90, 2)
            pboxes.append([x, y, x + rng.uniform(5, 30), y + rng.uniform(5, 30)])
            plabels.append(int(rng.integers(0, len(LABELS))))
            scores.append(float(rng.uniform(0.0, 0.7)))
        predicted.append(ImageBoxes(f"img-{i}", 120, 100, pboxes, plabels, scores))
    return truth, predicted


def _independent_cocoeval(truth: list[ImageBoxes], predicted: list[ImageBoxes]) -> COCOeval:
    """COCOeval fed straight from the boxes, without any of Kiln's conversion code."""
    dataset: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    dataset["categories"] = [{"id": 100 + c, "name": n} for c, n in enumerate(LABELS)]
    results = []
    for index, (t, p) in enumerate(zip(truth, predicted, strict=True)):
        image_id = 1000 + index  # other ids than Kiln's, on purpose
        dataset["images"].append({"id": image_id, "width": t.width, "height": t.height})
        for (x1, y1, x2, y2), c in zip(t.boxes, t.labels, strict=True):
            dataset["annotations"].append(
                {
                    "id": len(dataset["annotations"]) + 7,
                    "image_id": image_id,
                    "category_id": 100 + c,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        assert p.scores is not None
        for (x1, y1, x2, y2), c, s in zip(p.boxes, p.labels, p.scores, strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 100 + c,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": s,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kiln_metrics_agree_with_an_independent_cocoeval(seed: int) -> None:
    truth, predicted = _scene(seed)
    report = evaluate_detections(truth, predicted, LABELS, score_threshold=0.5)
    reference = _independent_cocoeval(truth, predicted)
    assert report.map == pytest.approx(reference.stats[0], abs=1e-12)
    assert report.map50 == pytest.approx(reference.stats[1], abs=1e-12)
    assert report.map75 == pytest.approx(reference.stats[2], abs=1e-12)
    assert report.recall == pytest.approx(reference.stats[8], abs=1e-12)
    assert 0.05 < report.map50 < 0.99  # a scene neither trivially right nor wrong
    # Per class: COCOeval's own per-category evaluation (catIds restricted to one class).
    for c, name in enumerate(LABELS):
        one = _independent_cocoeval(truth, predicted)
        with contextlib.redirect_stdout(io.StringIO()):
            one.params.catIds = [100 + c]
            one.evaluate()
            one.accumulate()
            one.summarize()
        assert report.per_class[name].ap == pytest.approx(one.stats[0], abs=1e-12)
        assert report.per_class[name].ap50 == pytest.approx(one.stats[1], abs=1e-12)
        assert report.per_class[name].recall == pytest.approx(
            float(one.eval["recall"][0, 0, 0, -1]), abs=1e-12
        )
    metrics = report.metrics()
    assert metrics["map50"] == report.map50 and metrics["ap.dog"] == report.per_class["dog"].ap


def test_perfect_predictions_score_one_and_none_score_zero() -> None:
    truth, _ = _scene(5, images=10)
    perfect = [
        ImageBoxes(t.item_id, t.width, t.height, t.boxes, t.labels, [0.9] * len(t.boxes))
        for t in truth
    ]
    report = evaluate_detections(truth, perfect, LABELS, 0.5)
    assert report.map == pytest.approx(1.0) and report.map50 == pytest.approx(1.0)
    assert report.bad_cases_total == 0
    empty = [ImageBoxes(t.item_id, t.width, t.height, [], [], []) for t in truth]
    nothing = evaluate_detections(truth, empty, LABELS, 0.5)
    assert nothing.map == 0.0 and nothing.map50 == 0.0
    assert nothing.bad_cases_total == 10
    # The worst image (most missed boxes) comes first, with its true boxes.
    worst = nothing.box_cases[0]
    assert worst.missed == max(len(t.boxes) for t in truth) and len(worst.truth) == worst.missed


def test_bad_cases_count_missed_and_false_boxes_at_iou_half_above_the_score() -> None:
    truth = [ImageBoxes("a", 50, 50, [[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])]
    predicted = [
        ImageBoxes(
            "a",
            50,
            50,
            [[0, 0, 10, 10], [21, 21, 31, 31], [40, 40, 45, 45], [20, 20, 30, 30]],
            [0, 0, 2, 1],
            [0.9, 0.8, 0.7, 0.2],  # the right box for class 1 is below the threshold
        )
    ]
    report = evaluate_detections(truth, predicted, LABELS, score_threshold=0.5)
    (case,) = report.box_cases
    assert (case.missed, case.false) == (1, 2)
    assert [p["score"] for p in case.predicted] == [0.9, 0.8, 0.7]
    assert report.bad_cases[0]["label"] == "2 boxes: cat, dog"
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
