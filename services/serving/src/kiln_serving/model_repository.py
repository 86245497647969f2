"""Build a Triton model (config plus files) from a model artifact, to load without a shared
filesystem: the Python backend wraps the TorchScript file with preprocessing and softmax."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiln_core import preprocessing
from kiln_core.catalog import ModelArtifact
from kiln_serving.detection import build_detection_model, is_detector

BACKEND_SOURCE = (Path(__file__).with_name("triton_backend.py")).read_bytes()
# The one preprocessing definition (training builds its tensors with it), shipped with the model.
PREPROCESSING_SOURCE = Path(preprocessing.__file__).read_bytes()
PREPROCESSING_FILE = "kiln_preprocessing.py"  # the name triton_backend loads it by
OUTPUT = "probabilities"


@dataclass(frozen=True)
class InputShape:
    """What a request carries into Triton for one model."""

    name: str
    datatype: str  # BYTES for raw images and text, FP32 for tabular features
    dims: list[int]  # without the batch dimension


def triton_model_name(endpoint: str, version: int, deployment_id: str) -> str:
    """Unique per deployment, readable per version: ``<endpoint>--v<version>--<id>``."""
    return f"{endpoint}--v{version}--{deployment_id[-8:]}"


def request_input(artifact: ModelArtifact) -> InputShape:
    """The raw input Triton takes: bytes for images and text, the feature vector otherwise."""
    kind = artifact.preprocessing.kind
    if kind == "image":
        return InputShape("image", "BYTES", [1])
    if kind == "text":
        return InputShape("text", "BYTES", [1])
    first = artifact.signature.inputs[0]
    return InputShape(first.name, "FP32", list(first.shape))


def build_model(
    artifact: ModelArtifact, model_bytes: bytes, *, instance_count: int, max_batch_size: int
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(config, files) for ``load_model``."""
    shape = request_input(artifact)
    if is_detector(artifact):
        return build_detection_model(
            artifact,
            model_bytes,
            shape.name,
            instance_count=instance_count,
            max_batch_size=max_batch_size,
        )
    config = {
        "backend": "python",
        "max_batch_size": max_batch_size,
        "input": [
            {
                "name": shape.name,
                "data_type": f"TYPE_{_config_dtype(shape.datatype)}",
                "dims": shape.dims,
            }
        ],
        "output": [{"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [len(artifact.label_map)]}],
        "instance_group": [{"kind": "KIND_CPU", "count": instance_count}],
        # Serving already sends concurrent requests to a model together, one call per model
        # instance at a time, so a queue delay would only hold each call: Triton gains no more
        # requests by waiting, while every call would wait out the delay. Requests that do
        # arrive while an instance is busy (shadows, other replicas) are still batched.
        "dynamic_batching": {"max_queue_delay_microseconds": 0},
    }
    meta = {
        "input_name": shape.name,
        "preprocessing": artifact.preprocessing.model_dump(),
        "signature": artifact.signature.model_dump(),
        "label_map": artifact.label_map,
    }
    files = {
        "file:1/model.py": BACKEND_SOURCE,
        f"file:1/{PREPROCESSING_FILE}": PREPROCESSING_SOURCE,
        "file:1/model.pt": model_bytes,
        "file:1/kiln.json": json.dumps(meta).encode(),
    }
    return config, files


def _config_dtype(datatype: str) -> str:
    return "STRING" if datatype == "BYTES" else datatype


def warmup_input(artifact: ModelArtifact) -> np.ndarray:
    """One real request's input, to run through a fresh model before it takes traffic."""
    pre = artifact.preprocessing
    if pre.kind == "image":
        from PIL import Image

        h, w = pre.size or [8, 8]
        buf = io.BytesIO()
        Image.new(pre.mode or "RGB", (w, h)).save(buf, format="PNG")
        return np.array([[buf.getvalue()]], dtype=object)
    if pre.kind == "text":
        return np.array([[b"warm up"]], dtype=object)
    dims = [d if d > 0 else 1 for d in request_input(artifact).dims]
    return np.zeros([1, *dims], dtype=np.float32)
