"""COCO-style metrics of a detector on the evaluation split, computed by pycocotools' COCOeval.

Boxes here are ``[x1, y1, x2, y2]`` in the image's own pixels (torchvision's convention);
COCOeval gets them as COCO ``[x, y, width, height]``. Classes are indices into the label map.

- ``map``: AP averaged over IoU 0.50:0.05:0.95 (COCO's headline number), ``map50`` and ``map75``
  at one IoU; ``recall``: COCO's AR@100 over the same IoUs.
- per class: AP@[.5:.95], AP@.5 and recall at IoU 0.5 (100 detections per image). A class
  with no ground-truth boxes has AP -1 in COCOeval; it is left out of the report.
- bad cases: the images with the most missed and false boxes at IoU 0.5 among detections at
  or above the score threshold (greedy matching, highest score first, same class), each with
  its true and predicted boxes.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from pydantic import BaseModel

MAX_BAD_CASES = 1000
MATCH_IOU = 0.5


@dataclass
class ImageBoxes:
    """One image's boxes (``[x1, y1, x2, y2]``), class indices and, for predictions, scores."""

    item_id: str
    width: int
    height: int
    boxes: list[list[float]]
    labels: list[int]
    scores: list[float] | None = None


class ClassAP(BaseModel):
    ap: float  # AP@[.5:.95]
    ap50: float
    recall: float  # at IoU 0.5, up to 100 detections per image
    support: int  # true boxes


class BoxCase(BaseModel):
    """An evaluation image the detector got wrong, with both sets of boxes."""

    item_id: str
    missed: int
    false: int
    truth: list[dict[str, Any]]  # {"label", "box": [x1, y1, x2, y2]}
    predicted: list[dict[str, Any]]  # {"label", "box", "score"}

    def as_bad_case(self) -> dict[str, Any]:
        """The flat form the training service stores per bad case."""
        return {
            "item_id": self.item_id,
            "label": _summary(self.truth),
            "predicted": _summary(self.predicted),
            "confidence": max((p["score"] for p in self.predicted), default=0.0),
        }


class DetectionReport(BaseModel):
    map: float
    map50: float
    map75: float
    recall: float
    per_class: dict[str, ClassAP]
    labels: list[str]
    bad_cases: list[dict[str, Any]]  # BoxCase.as_bad_case, worst first
    box_cases: list[BoxCase]  # the same images with their boxes
    bad_cases_total: int
    support: int  # evaluation images
    boxes: int  # true boxes

    def metrics(self) -> dict[str, float]:
        """Flat metrics for the job and the registry's gates: ``map``, ``map50``, ``map75``,
        ``recall`` and per class ``ap.<name>``, ``ap50.<name>``, ``recall.<name>``."""
        out = {"map": self.map, "map50": self.map50, "map75": self.map75, "recall": self.recall}
        for name, c in self.per_class.items():
            out[f"ap.{name}"] = c.ap
            out[f"ap50.{name}"] = c.ap50
            out[f"recall.{name}"] = c.recall
        return out


def coco_ground_truth(truth: list[ImageBoxes], num_classes: int) -> dict[str, Any]:
    """A COCO ground-truth dataset: image ids are positions in ``truth``, category ids class
    indices."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, image in enumerate(truth):
        images.append({"id": image_id, "width": image.width, "height": image.height})
        for box, label in zip(image.boxes, image.labels, strict=True):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in range(num_classes)],
    }


def coco_detections(predicted: list[ImageBoxes]) -> list[dict[str, Any]]:
    """Detections in COCO's result format, image ids as in :func:`coco_ground_truth`."""
    out = []
    for image_id, image in enumerate(predicted):
        scores = image.scores or [1.0] * len(image.boxes)
        for box, label, score in zip(image.boxes, image.labels, scores, strict=True):
            x1, y1, x2, y2 = box
            out.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return out


def run_cocoeval(ground_truth: dict[str, Any], detections: list[dict[str, Any]]) -> COCOeval:
    """COCOeval (bbox) evaluated and accumulated, its console output swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        # loadRes refuses an empty list; an empty result set is a COCO object with no anns.
        dt = gt.loadRes(detections) if detections else _empty_results(gt)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _empty_results(gt: COCO) -> COCO:
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "annotations": [], "categories": []}
    dt.dataset["categories"] = list(gt.dataset["categories"])
    dt.createIndex()
    return dt


def evaluate_detections(
    truth: list[ImageBoxes],
    predicted: list[ImageBoxes],
    labels: list[str],
    score_threshold: float,
    max_bad_cases: int = MAX_BAD_CASES,
) -> DetectionReport:
    """COCO metrics of ``predicted`` against ``truth`` (same images, same order)."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions must cover the same images")
    evaluator = run_cocoeval(coco_ground_truth(truth, len(labels)), coco_detections(predicted))
    stats = [max(float(s), 0.0) for s in evaluator.stats]
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, max dets]
    recall = evaluator.eval["recall"]  # [iou, class, area, max dets]
    support = np.bincount(
        np.asarray([label for image in truth for label in image.labels], dtype=np.int64),
        minlength=len(labels),
    )
    per_class: dict[str, ClassAP] = {}
    for c, name in enumerate(labels):
        if support[c] == 0:
            continue
        per_class[name] = ClassAP(
            ap=_mean_valid(precision[:, :, c, 0, -1]),
            ap50=_mean_valid(precision[0, :, c, 0, -1]),
            recall=max(float(recall[0, c, 0, -1]), 0.0),
            support=int(support[c]),
        )
    cases = [
        case
        for t, p in zip(truth, predicted, strict=True)
        if (case := _box_case(t, p, labels, score_threshold)) is not None
    ]
    cases.sort(key=lambda c: (-(c.missed + c.false), c.item_id))
    kept = cases[:max_bad_cases]
    return DetectionReport(
        map=stats[0],
        map50=stats[1],
        map75=stats[2],
        recall=stats[8],
        per_class=per_class,
        labels=list(labels),
        bad_cases=[c.as_bad_case() for c in kept],
        box_cases=kept,
        bad_cases_total=len(cases),
        support=len(truth),
        boxes=int(support.sum()),
    )


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else 0.0


def box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _box_case(
    truth: ImageBoxes, predicted: ImageBoxes, labels: list[str], score_threshold: float
) -> BoxCase | None:
    scores = predicted.scores or [1.0] * len(predicted.boxes)
    kept = sorted(
        (i for i, s in enumerate(scores) if s >= score_threshold), key=lambda i: -scores[i]
    )
    unmatched = set(range(len(truth.boxes)))
    false = 0
    for i in kept:
        best, best_iou = None, MATCH_IOU
        for j in unmatched:
            if truth.labels[j] != predicted.labels[i]:
                continue
            iou = box_iou(truth.boxes[j], predicted.boxes[i])
            if iou >= best_iou:
                best, best_iou = j, iou
        if best is None:
            false += 1
        else:
            unmatched.discard(best)
    if not unmatched and not false:
        return None
    return BoxCase(
        item_id=truth.item_id,
        missed=len(unmatched),
        false=false,
        truth=[
            {"label": labels[c], "box": [round(v, 2) for v in b]}
            for b, c in zip(truth.boxes, truth.labels, strict=True)
        ],
        predicted=[
            {
                "label": labels[predicted.labels[i]],
                "box": [round(v, 2) for v in predicted.boxes[i]],
                "score": round(float(scores[i]), 4),
            }
            for i in kept
        ],
    )


def _summary(boxes: list[dict[str, Any]]) -> str:
    names = sorted(str(b["label"]) for b in boxes)
    return f"{len(names)} box{'es' if len(names) != 1 else ''}: {', '.join(names)}"[:200]
