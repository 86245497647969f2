"""How a raw input becomes a model's input row: the one definition training and serving share.

Training builds its tensors with it; serving ships this file beside the model it loads into
Triton (the Python backend runs it there), so a served model sees exactly what it was trained
on. It needs only NumPy, Pillow and the standard library, and imports nothing from Kiln: in
Triton's stub it is loaded from the model's folder, not as part of ``kiln_core``.

``spec`` is a model's preprocessing as JSON (:class:`kiln_core.catalog.Preprocessing`):

- image: FP32 ``[C, H, W]`` — decoded, converted to ``mode``, resized to ``size`` ``[h, w]``
  (bicubic) when it differs, scaled to 0..1, then ``(x - mean[c]) / std[c]`` per channel.
- tabular: FP32 ``[F]`` — the numbers, then ``(x - mean[f]) / std[f]``.
- text: INT64 ``[-1]`` — the text lower-cased and split on whitespace, each token
  ``crc32(utf-8 bytes) % buckets``.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image


def decode_image(raw: bytes, mode: str, size: Sequence[int]) -> np.ndarray:
    """Image bytes as float32 ``C×H×W`` in 0..1: converted to ``mode``, resized to ``size``
    ``[h, w]`` with bicubic filtering when it differs."""
    with Image.open(io.BytesIO(raw)) as opened:
        image = opened.convert(mode) if opened.mode != mode else opened.copy()
    height, width = int(size[0]), int(size[1])
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def parse_tabular(raw: bytes | str | Sequence[Any]) -> np.ndarray:
    """Features as float32: numbers, a JSON array of numbers, or one CSV line of numbers."""
    if isinstance(raw, bytes | str):
        text = (raw.decode("utf-8") if isinstance(raw, bytes) else raw).strip()
        values: Sequence[Any] = (
            json.loads(text) if text.startswith("[") else [f.strip() for f in text.split(",")]
        )
    else:
        values = raw
    try:
        return np.asarray([float(v) for v in values], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tabular input must be numbers: {exc}") from None


def tokenize(text: str, buckets: int) -> np.ndarray:
    """Token ids (int64) of ``text``: lower-cased whitespace tokens, ``crc32 % buckets``."""
    return np.asarray(
        [zlib.crc32(token.encode("utf-8")) % buckets for token in text.lower().split()],
        dtype=np.int64,
    )


def normalize(array: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(x - mean) / std`` along the first axis (channels of an image, or features)."""
    shape = (-1,) + (1,) * (array.ndim - 1)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    return ((array - m) / s).astype(np.float32, copy=False)


def preprocess(spec: Mapping[str, Any], raw: bytes | str | Sequence[Any]) -> np.ndarray:
    """One raw input as the model's input row (no batch dimension).

    ``raw`` is image bytes, tabular numbers (a sequence, a JSON array or a CSV line) or text
    (str or UTF-8 bytes), according to ``spec["kind"]``.
    """
    kind = spec.get("kind")
    mean, std = spec.get("mean"), spec.get("std")
    if kind == "image":
        if not isinstance(raw, bytes | bytearray):
            raise ValueError("image input must be bytes")
        if spec.get("mode") is None or spec.get("size") is None:
            raise ValueError("image preprocessing needs a mode and a size")
        array = decode_image(bytes(raw), spec["mode"], spec["size"])
        return normalize(array, mean, std) if mean is not None and std is not None else array
    if kind == "tabular":
        array = parse_tabular(raw)
        if mean is not None and std is not None:
            if array.shape[0] != len(mean):
                raise ValueError(f"expected {len(mean)} features, got {array.shape[0]}")
            array = normalize(array, mean, std)
        return array
    if kind == "text":
        if spec.get("buckets") is None:
            raise ValueError("text preprocessing needs a number of buckets")
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        if not isinstance(text, str):
            raise ValueError("text input must be a string")
        return tokenize(text, int(spec["buckets"]))
    raise ValueError(f"unknown preprocessing kind {kind!r}")
