"""The detector's answer and flagging policy (kiln_serving.detection), without services."""

from __future__ import annotations

import numpy as np
import pytest

from kiln_serving.detection import image_answer

LABELS = ["cat", "dog"]


def test_boxes_answer_in_coco_order_best_first_without_padding_or_noise() -> None:
    rows = np.array(
        [
            [10, 20, 30, 60, 0.4, 1],
            [0, 0, 5, 5, 0.1, 0],  # under the floor: not answered
            [1, 2, 11, 12, 0.95, 0],
            [0, 0, 0, 0, 0.0, -1],  # padding
        ],
        dtype=np.float32,
    )
    answer, confidence, shown = image_answer(rows, LABELS, floor=0.3)
    assert [d["label"] for d in answer["detections"]] == ["cat", "dog"]
    assert answer["detections"][0]["bbox"] == [1.0, 2.0, 10.0, 10.0]  # [x, y, w, h]
    assert answer["detections"][1]["bbox"] == [10.0, 20.0, 20.0, 40.0]
    assert answer["label"] == "cat"
    # One uncertain box makes the image uncertain: its confidence is its weakest shown box.
    assert confidence == pytest.approx(0.4) and answer["confidence"] == pytest.approx(0.4)
    assert shown == answer["detections"]


def test_an_image_without_shown_boxes_is_as_confident_as_its_best_box_is_weak() -> None:
    rows = np.array([[0, 0, 5, 5, 0.2, 1]], dtype=np.float32)
    answer, confidence, shown = image_answer(rows, LABELS, floor=0.3)
    assert answer["detections"] == [] and answer["label"] is None and shown == []
    assert confidence == pytest.approx(0.8)
    empty, nothing, _ = image_answer(np.zeros((0, 6), dtype=np.float32), LABELS, floor=0.3)
    assert nothing == 1.0 and empty["detections"] == []
