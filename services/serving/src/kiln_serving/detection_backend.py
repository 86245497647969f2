"""The Python-backend ``model.py`` Kiln detectors run as inside Triton (shipped as a file).

Each request carries ``image`` BYTES ``[n, 1]``: encoded images, of any sizes. Each is
decoded, converted to the training colour mode, scaled to 0..1 and run through the TorchScript
detector (which resizes and normalises inside and maps its boxes back to the image's pixels);
the answer is ``detections`` FP32 ``[n, K, 6]`` — ``x1, y1, x2, y2, score, class`` per box,
K the most boxes of any image of the request, shorter rows padded with class -1.

Images go through the model one at a time: a batch tensor needs one size, and requests
(and images within one) differ. It imports only numpy, Pillow and torch: the exported script
calls no torchvision operator.
"""

from __future__ import annotations

import io
import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

if TYPE_CHECKING:
    import torch

MAX_PIXELS = 4096 * 4096  # a decompression bomb fails its request, not the model


def decode(data: bytes, mode: str) -> np.ndarray:
    """Image bytes as float32 ``C×H×W`` in 0..1, converted to ``mode``."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        if opened.width * opened.height > MAX_PIXELS:
            raise ValueError(f"image of {opened.width}×{opened.height} pixels is too large")
        image = opened.convert(mode)
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


class TritonPythonModel:
    """Decode each image, detect, pad the request's rows to one length."""

    def initialize(self, args: dict[str, str]) -> None:
        global torch
        import torch

        torch.set_num_threads(1)  # one core per instance; Triton runs instances side by side
        folder = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(folder, "kiln.json")) as f:
            meta = json.load(f)
        self.mode: str = meta["preprocessing"].get("mode") or "RGB"
        self.input_name: str = meta["input_name"]
        self.model = torch.jit.load(os.path.join(folder, "model.pt"), map_location="cpu")
        self.model.eval()

    def _detect(self, image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(image)[None])
        return out[0].numpy()

    def _answer(self, request: Any) -> Any:
        raw = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
        try:
            images = [decode(bytes(item.reshape(-1)[0]), self.mode) for item in raw]
        except Exception as exc:  # noqa: BLE001 - a bad input fails its own request only
            return _error(f"bad input: {exc}")
        try:
            rows = [self._detect(image) for image in images]
        except Exception as exc:  # noqa: BLE001
            return _error(f"model failed: {exc}")
        longest = max([0, *(len(r) for r in rows)])
        out = np.zeros((len(rows), longest, 6), dtype=np.float32)
        out[:, :, 5] = -1.0
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("detections", out)])

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._answer(request) for request in requests]


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
