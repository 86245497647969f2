"""Box pre-label acceptance: each suggested box kept by the annotator (same class, IoU >= 0.5)
counts once."""

from __future__ import annotations

from kiln_annotation.prelabel import box_suggestion
from kiln_annotation.workflow import box_acceptance


def test_suggested_boxes_count_as_accepted_at_iou_half_of_the_same_class() -> None:
    suggestion = box_suggestion(
        [
            {"label": "3", "score": 0.9, "bbox": [0, 0, 10, 10]},
            {"label": "7", "score": 0.4, "bbox": [20, 20, 10, 10]},
            {"label": "1", "score": 0.3, "bbox": [40, 40, 10, 10]},
        ],
        0.3,
        "model:m@v1",
    )
    assert suggestion["labels"][0] == {
        "type": "box",
        "label": "3",
        "bbox": [0.0, 0.0, 10.0, 10.0],
        "score": 0.9,
    }
    labels = {
        "a": [
            {"type": "box", "label": "3", "bbox": [1, 1, 10, 10]},  # IoU 0.68: kept
            {"type": "box", "label": "1", "bbox": [20, 20, 10, 10]},  # relabelled: not kept
            {"type": "box", "label": "1", "bbox": [45, 40, 10, 10]},  # IoU 1/3: not kept
        ],
    }
    assert box_acceptance({"a": suggestion, "b": suggestion}, labels) == (3, 1)
    assert box_acceptance(None, labels) == (0, 0)
