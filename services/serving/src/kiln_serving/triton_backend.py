"""The Python-backend ``model.py`` every Kiln model runs as inside Triton (shipped as a file).

It loads the TorchScript model, turns raw request inputs into the model's tensor with the
preprocessing module training used (shipped beside it; ``kiln.json`` holds the model's
preprocessing spec and signature) and answers class probabilities. It imports only numpy,
Pillow and torch: it runs in Triton's stub process.

torch is imported in ``initialize``, not at module level: Triton's Python backend imports this
file twice per load (once in a throw-away stub that only asks for ``auto_complete_config``, once
in the instance's stub), and importing torch costs about two seconds each time.
"""

from __future__ import annotations

import importlib.util
import json
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

if TYPE_CHECKING:
    import torch

# Shipped beside this file by ``model_repository.build_model``.
PREPROCESSING_FILE = "kiln_preprocessing.py"


def load_preprocessing(folder: str) -> ModuleType:
    """The preprocessing shipped beside this file (``kiln_core.preprocessing``, the module
    training built its tensors with), loaded from the model's own folder."""
    path = os.path.join(folder, PREPROCESSING_FILE)
    spec = importlib.util.spec_from_file_location("kiln_model_preprocessing", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"no preprocessing module at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TritonPythonModel:
    """Preprocess, run the TorchScript model on the whole dynamic batch, softmax."""

    def initialize(self, args: dict[str, str]) -> None:
        global torch
        import torch

        torch.set_num_threads(1)  # one core per instance; Triton runs instances side by side
        folder = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(folder, "kiln.json")) as f:
            meta = json.load(f)
        self.preprocessing = load_preprocessing(folder)
        self.pre: dict[str, Any] = meta["preprocessing"]
        self.kind: str = self.pre["kind"]
        self.input_name: str = meta["input_name"]
        self.model_inputs: list[dict[str, Any]] = meta["signature"]["inputs"]
        self.model = torch.jit.load(os.path.join(folder, "model.pt"), map_location="cpu")
        self.model.eval()

    def _features(self, request: Any) -> list[np.ndarray]:
        raw = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
        pre = self.preprocessing
        if self.kind == "image":
            return [pre.preprocess(self.pre, bytes(item.reshape(-1)[0])) for item in raw]
        if self.kind == "text":
            # An empty text is one padding id (ignored by the model), so no row is empty.
            ids = [
                pre.tokenize(_text(item.reshape(-1)[0]), int(self.pre["buckets"])) for item in raw
            ]
            return [i if len(i) else np.zeros(1, dtype=np.int64) for i in ids]
        mean, std = self.pre.get("mean"), self.pre.get("std")
        rows = [row.astype(np.float32) for row in raw]
        return rows if mean is None or std is None else [pre.normalize(r, mean, std) for r in rows]

    def _run(self, items: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            if self.kind == "text":
                out = self.model(*self._text_batch(items))
            else:
                out = self.model(torch.from_numpy(np.stack(items)))
            return torch.softmax(out.float(), dim=-1).numpy()

    def _text_batch(self, items: list[np.ndarray]) -> list[torch.Tensor]:
        if len(self.model_inputs) >= 2:  # EmbeddingBag style: flat ids and per-row offsets
            offsets = np.cumsum([0] + [len(i) for i in items[:-1]]).astype(np.int64)
            return [torch.from_numpy(np.concatenate(items)), torch.from_numpy(offsets)]
        longest = max(len(i) for i in items)
        padded = np.zeros((len(items), longest), dtype=np.int64)
        for row, ids in enumerate(items):
            padded[row, : len(ids)] = ids
        return [torch.from_numpy(padded)]

    def execute(self, requests: list[Any]) -> list[Any]:
        features: list[list[np.ndarray] | Exception] = []
        for request in requests:
            try:
                features.append(self._features(request))
            except Exception as exc:  # noqa: BLE001 - a bad input fails its own request only
                features.append(exc)
        good = [f for f in features if not isinstance(f, Exception)]
        try:
            probs = self._run([x for f in good for x in f]) if good else None
        except Exception:  # noqa: BLE001 - retry one by one so only the failing request errors
            probs = None
        responses = []
        offset = 0
        for f in features:
            if isinstance(f, Exception):
                responses.append(_error(f"bad input: {f}"))
                continue
            if probs is not None:
                part = probs[offset : offset + len(f)]
                offset += len(f)
            else:
                try:
                    part = self._run(f)
                except Exception as exc:  # noqa: BLE001
                    responses.append(_error(f"model failed: {exc}"))
                    continue
            tensor = pb_utils.Tensor("probabilities", part.astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
