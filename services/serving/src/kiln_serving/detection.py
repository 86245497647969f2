"""Serving detectors: their Triton model, their ``:predict`` answer, and which images they
flag for labelling.

A model version is a detector when its artifact's first output is ``detections`` (the
training service's ``detection-fcos`` export). Triton runs it through
:mod:`kiln_serving.detection_backend` with a variable-size output ``[-1, 6]`` per image.

``:predict`` answers per image ``detections``: ``{"label", "score", "bbox"}`` with ``bbox``
``[x, y, width, height]`` in the input image's pixels (the manifest's COCO order), best first,
plus ``label`` (the best box's class, or null) and ``confidence``.

Flagging policy (active learning for boxes). A box is *uncertain* when its score lies between
the endpoint's ``box_score_floor`` (below it a box is noise, not shown) and its
``confidence_threshold``. An image's ``confidence`` is the lowest score among its shown boxes,
so one uncertain box makes the image uncertain; an image with no shown box is confident
there is nothing (confidence 1 minus its best score). Images under ``confidence_threshold``
are flagged, their shown boxes travelling with them as pre-labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kiln_core.catalog import ModelArtifact

DETECTIONS = "detections"
BACKEND_SOURCE = (Path(__file__).with_name("detection_backend.py")).read_bytes()


def is_detector(artifact: ModelArtifact) -> bool:
    """Whether the artifact is an object detector (its first output is ``detections``)."""
    outputs = artifact.signature.outputs
    return bool(outputs) and outputs[0].name == DETECTIONS


def build_detection_model(
    artifact: ModelArtifact,
    model_bytes: bytes,
    input_name: str,
    *,
    instance_count: int,
    max_batch_size: int,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(config, files) for Triton's ``load_model``: BYTES images in, ``[-1, 6]`` out."""
    config = {
        "backend": "python",
        "max_batch_size": max_batch_size,
        "input": [{"name": input_name, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [{"name": DETECTIONS, "data_type": "TYPE_FP32", "dims": [-1, 6]}],
        "instance_group": [{"kind": "KIND_CPU", "count": instance_count}],
        "dynamic_batching": {"max_queue_delay_microseconds": 0},
    }
    meta = {
        "input_name": input_name,
        "preprocessing": artifact.preprocessing.model_dump(),
        "signature": artifact.signature.model_dump(),
        "label_map": artifact.label_map,
    }
    files = {
        "file:1/model.py": BACKEND_SOURCE,
        "file:1/model.pt": model_bytes,
        "file:1/kiln.json": json.dumps(meta).encode(),
    }
    return config, files


def image_answer(
    rows: np.ndarray, labels: list[str], floor: float
) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    """One image's ``[K, 6]`` rows as its answer, its confidence and its shown boxes."""
    shown: list[dict[str, Any]] = []
    best = 0.0
    for x1, y1, x2, y2, score, cls in rows.tolist():
        if cls < 0:
            continue  # padding
        best = max(best, score)
        if score < floor:
            continue
        k = int(cls)
        shown.append(
            {
                "label": labels[k] if k < len(labels) else str(k),
                "score": round(score, 6),
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            }
        )
    shown.sort(key=lambda d: -d["score"])
    confidence = min((d["score"] for d in shown), default=1.0 - best)
    answer = {
        "label": shown[0]["label"] if shown else None,
        "confidence": round(confidence, 6),
        "detections": shown,
    }
    return answer, confidence, shown
