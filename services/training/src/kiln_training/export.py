"""Trained models as servable artifacts: TorchScript, weights, signature, preprocessing.

:func:`preprocess` is the one definition of how a raw input becomes a model input row; training
builds its tensors with it, serving applies it to requests. It needs only NumPy, Pillow and
zlib so Triton's Python backend can vendor it.

Model inputs (the batch dimension first, as Triton batches them):

- image: ``input`` FP32 ``[C, H, W]`` — decoded, converted to ``mode``, resized to ``size``
  ``[h, w]`` (Pillow's bicubic, its default), scaled to 0..1, then ``(x - mean[c]) / std[c]``
  per channel.
- tabular: ``input`` FP32 ``[F]`` — the numbers, then ``(x - mean[f]) / std[f]``.
- text: ``input`` INT64 ``[-1]`` — token ids: the text lower-cased and split on whitespace, each
  token ``crc32(utf-8 bytes) % buckets``. Id ``0`` is also padding (the model ignores it, so
  the rare token hashing to bucket 0 is ignored too): a batch is right-padded with 0 to its
  longest row, and padding does not change the output.

Output: ``logits`` FP32 ``[num_labels]``; column ``i`` is ``label_map[i]``.
"""

from __future__ import annotations

import io
import json
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from kiln_core.catalog import ModelSignature, Preprocessing, TensorSpec

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PAD_ID = 0


@dataclass
class ExportedModel:
    """A trained model ready to store: TorchScript for serving, weights for warm starts."""

    torchscript: bytes
    state_dict: bytes
    signature: ModelSignature
    label_map: list[str]
    preprocessing: Preprocessing

    def artifact_fields(self) -> dict[str, Any]:
        """``signature``, ``label_map`` and ``preprocessing`` as JSON-ready values, the part of a
        :class:`~kiln_core.catalog.ModelArtifact` that does not depend on where bytes went."""
        return {
            "signature": self.signature.model_dump(),
            "label_map": list(self.label_map),
            "preprocessing": self.preprocessing.model_dump(exclude_none=True),
        }


# --- preprocessing -----------------------------------------------------------------------------


def decode_image(raw: bytes, mode: str, size: list[int] | tuple[int, int]) -> np.ndarray:
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


def parse_tabular(raw: bytes | str | list[Any]) -> np.ndarray:
    """Features as float32: a JSON array of numbers, or one CSV line of numbers."""
    if isinstance(raw, list):
        values: list[Any] = raw
    else:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        text = text.strip()
        if text.startswith("["):
            values = json.loads(text)
        else:
            values = [field.strip() for field in text.split(",")]
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


def normalize(array: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """``(x - mean) / std`` along the first axis (channels of an image, or features)."""
    shape = (-1,) + (1,) * (array.ndim - 1)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    return ((array - m) / s).astype(np.float32, copy=False)


def preprocess(preprocessing: Preprocessing, raw: bytes | list[Any] | str) -> np.ndarray:
    """One raw input as the model's input row (no batch dimension), exactly as in training.

    ``raw`` is image bytes, tabular numbers (a list, a JSON array or a CSV line) or text (str or
    UTF-8 bytes), according to ``preprocessing.kind``.
    """
    kind = preprocessing.kind
    if kind == "image":
        if not isinstance(raw, bytes | bytearray):
            raise ValueError("image input must be bytes")
        assert preprocessing.mode is not None and preprocessing.size is not None
        array = decode_image(bytes(raw), preprocessing.mode, preprocessing.size)
        if preprocessing.mean is not None and preprocessing.std is not None:
            array = normalize(array, preprocessing.mean, preprocessing.std)
        return array
    if kind == "tabular":
        array = parse_tabular(raw)
        if preprocessing.mean is not None and preprocessing.std is not None:
            if array.shape[0] != len(preprocessing.mean):
                raise ValueError(
                    f"expected {len(preprocessing.mean)} features, got {array.shape[0]}"
                )
            array = normalize(array, preprocessing.mean, preprocessing.std)
        return array
    if kind == "text":
        assert preprocessing.buckets is not None
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        if not isinstance(text, str):
            raise ValueError("text input must be a string")
        return tokenize(text, preprocessing.buckets)
    raise ValueError(f"unknown preprocessing kind {kind!r}")


def pad_tokens(rows: Sequence[np.ndarray]) -> torch.Tensor:
    """Token id rows as one ``[N, L]`` int64 batch, right-padded with :data:`PAD_ID`."""
    length = max([1, *(len(r) for r in rows)])
    batch = torch.full((len(rows), length), PAD_ID, dtype=torch.int64)
    for i, row in enumerate(rows):
        if len(row):
            batch[i, : len(row)] = torch.as_tensor(row, dtype=torch.int64)
    return batch


# --- signature and export ----------------------------------------------------------------------


def signature_for(preprocessing: Preprocessing, num_labels: int) -> ModelSignature:
    """The model's input and output tensors (batch dimension not listed)."""
    if preprocessing.kind == "image":
        assert preprocessing.size is not None
        channels = 1 if preprocessing.mode == "L" else 3
        spec = TensorSpec(name=INPUT_NAME, dtype="FP32", shape=[channels, *preprocessing.size])
    elif preprocessing.kind == "tabular":
        assert preprocessing.mean is not None
        spec = TensorSpec(name=INPUT_NAME, dtype="FP32", shape=[len(preprocessing.mean)])
    else:
        spec = TensorSpec(name=INPUT_NAME, dtype="INT64", shape=[-1])
    return ModelSignature(
        inputs=[spec], outputs=[TensorSpec(name=OUTPUT_NAME, dtype="FP32", shape=[num_labels])]
    )


def export_model(
    model: torch.nn.Module, label_map: list[str], preprocessing: Preprocessing
) -> ExportedModel:
    """TorchScript (scripted, eval mode) and weights of ``model``, with its serving metadata."""
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but is what Triton's PyTorch path loads.
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.script(model)
            buffer = io.BytesIO()
            torch.jit.save(scripted, buffer)
        weights = io.BytesIO()
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, weights)
    finally:
        model.train(was_training)
    return ExportedModel(
        torchscript=buffer.getvalue(),
        state_dict=weights.getvalue(),
        signature=signature_for(preprocessing, len(label_map)),
        label_map=list(label_map),
        preprocessing=preprocessing,
    )


def load_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """Weights saved by :func:`export_model` (tensors only; nothing else is unpickled)."""
    loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise ValueError("warm-start weights must be a state_dict")
    return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
