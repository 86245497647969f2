"""A served model sees exactly what it was trained on: the same raw input, fed through training's
``preprocess`` and through the model serving builds for Triton (its Python backend, loaded from
the files serving ships, as Triton loads it), gives the same tensor bit for bit."""

from __future__ import annotations

import importlib.util
import io
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kiln_core.catalog import ModelArtifact, ModelSignature, Preprocessing, TensorSpec
from kiln_serving.model_repository import build_model
from kiln_training.export import preprocess
from tests.unit.training.synthetic import colour_images, texts


class _Tensor:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def as_numpy(self) -> np.ndarray:
        return self.array


@pytest.fixture(scope="module")
def stub_utils() -> Iterator[None]:
    # What Triton's stub provides to a Python-backend model: requests are dicts of inputs here.
    utils = types.ModuleType("triton_python_backend_utils")
    utils.get_input_tensor_by_name = lambda request, name: _Tensor(request[name])  # type: ignore[attr-defined]
    saved = sys.modules.get("triton_python_backend_utils")
    sys.modules["triton_python_backend_utils"] = utils
    yield
    if saved is None:
        sys.modules.pop("triton_python_backend_utils", None)
    else:
        sys.modules["triton_python_backend_utils"] = saved


def _served(tmp: Path, pre: Preprocessing, input_name: str, shape: list[int]) -> Any:
    """The model serving would load into Triton, written out and initialised as Triton does."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Identity()), buffer)
    artifact = ModelArtifact(
        uri="file://model.pt",
        key="model.pt",
        sha256="0" * 64,
        size_bytes=len(buffer.getvalue()),
        signature=ModelSignature(
            inputs=[TensorSpec(name=input_name, dtype="FP32", shape=shape)],
            outputs=[TensorSpec(name="logits", dtype="FP32", shape=[2])],
        ),
        label_map=["a", "b"],
        preprocessing=pre,
    )
    _config, files = build_model(artifact, buffer.getvalue(), instance_count=1, max_batch_size=8)
    for name, data in files.items():
        path = tmp / name.removeprefix("file:")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    spec = importlib.util.spec_from_file_location(f"served_{tmp.name}", tmp / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    threads = torch.get_num_threads()
    try:
        model.initialize({"model_repository": str(tmp), "model_version": "1"})
    finally:
        torch.set_num_threads(threads)  # the backend pins one thread, as in Triton's stub
    return model


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize(("mode", "size"), [("RGB", [8, 8]), ("L", [12, 12]), ("RGB", [6, 10])])
def test_served_image_tensor_is_the_trained_one_bit_for_bit(
    stub_utils: None, tmp_path: Path, mode: str, size: list[int]
) -> None:
    channels = 3 if mode == "RGB" else 1
    pre = Preprocessing(
        kind="image", mode=mode, size=size, mean=[0.4] * channels, std=[0.2] * channels
    )
    served = _served(tmp_path, pre, "input", [channels, *size])
    samples = colour_images(4, size=12)
    request = {"image": np.array([[s.raw] for s in samples], dtype=object)}
    theirs = served._features(request)
    for sample, tensor in zip(samples, theirs, strict=True):
        assert _same(preprocess(pre, sample.raw), tensor)


def test_served_text_and_tabular_tensors_are_the_trained_ones(
    stub_utils: None, tmp_path: Path
) -> None:
    pre = Preprocessing(kind="text", buckets=1000, hash="crc32")
    served = _served(tmp_path / "text", pre, "input", [-1])
    samples = texts(6)
    theirs = served._features({"text": np.array([[s.raw] for s in samples], dtype=object)})
    for sample, tensor in zip(samples, theirs, strict=True):
        assert _same(preprocess(pre, sample.raw), tensor)
    pre = Preprocessing(kind="tabular", mean=[1.0, 2.0], std=[2.0, 3.0])
    served = _served(tmp_path / "tabular", pre, "features", [2])
    rows = np.array([[1.5, -2.5], [0.1, 7.0]], dtype=np.float32)
    theirs = served._features({"features": rows})
    for row, tensor in zip(rows, theirs, strict=True):
        assert _same(preprocess(pre, row.tolist()), tensor)


def test_a_changed_preprocessing_would_be_noticed(stub_utils: None, tmp_path: Path) -> None:
    pre = Preprocessing(kind="image", mode="RGB", size=[8, 8], mean=[0.4] * 3, std=[0.2] * 3)
    served = _served(tmp_path, pre, "input", [3, 8, 8])
    raw = colour_images(1, size=12)[0].raw
    tensor = served._features({"image": np.array([[raw]], dtype=object)})[0]
    other = Preprocessing(kind="image", mode="RGB", size=[8, 8], mean=[0.5] * 3, std=[0.2] * 3)
    assert not _same(preprocess(other, raw), tensor)
