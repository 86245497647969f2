"""Trained models as servable artifacts: TorchScript, weights, signature, preprocessing.

:func:`preprocess` applies the one definition of how a raw input becomes a model input row
(:mod:`kiln_core.preprocessing`); training builds its tensors with it, and serving ships the
same file beside the model in Triton.

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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kiln_core.catalog import ModelSignature, Preprocessing, TensorSpec
from kiln_core.preprocessing import preprocess as shared_preprocess

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


def preprocess(preprocessing: Preprocessing, raw: bytes | list[Any] | str) -> np.ndarray:
    """One raw input as the model's input row (no batch dimension), exactly as serving does
    (see :mod:`kiln_core.preprocessing`, which serving ships with the model)."""
    return shared_preprocess(preprocessing.model_dump(), raw)


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
