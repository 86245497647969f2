"""Serving's vendored preprocessing (Triton Python backend) must equal training's ``preprocess``:
a model is only as good as the agreement between the tensors it trained on and those it serves."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

from kiln_core.catalog import Preprocessing
from kiln_training.export import preprocess
from tests.unit.training.synthetic import colour_images, texts


@pytest.fixture(scope="module")
def backend() -> Any:
    # The backend imports Triton's stub utilities, which exist only inside Triton.
    stub = types.ModuleType("triton_python_backend_utils")
    sys.modules.setdefault("triton_python_backend_utils", stub)
    return pytest.importorskip("kiln_serving.triton_backend")


@pytest.mark.parametrize(("mode", "size"), [("RGB", [8, 8]), ("L", [12, 12]), ("RGB", [6, 10])])
def test_image_preprocessing_agrees(backend: Any, mode: str, size: list[int]) -> None:
    channels = 3 if mode == "RGB" else 1
    pre = Preprocessing(
        kind="image", mode=mode, size=size, mean=[0.4] * channels, std=[0.2] * channels
    )
    for sample in colour_images(4, size=12):
        ours = preprocess(pre, sample.raw)
        theirs = backend.preprocess_image(sample.raw, pre.model_dump())
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_text_and_tabular_preprocessing_agree(backend: Any) -> None:
    pre = Preprocessing(kind="text", buckets=1000, hash="crc32")
    for sample in texts(6):
        theirs = backend.text_ids(sample.raw.decode(), pre.model_dump())
        assert np.array_equal(preprocess(pre, sample.raw), theirs)
    pre = Preprocessing(kind="tabular", mean=[1.0, 2.0], std=[2.0, 3.0])
    row = np.array([1.5, -2.5], dtype=np.float32)
    theirs = backend.preprocess_tabular(row, pre.model_dump())
    assert np.array_equal(preprocess(pre, row.tolist()), theirs)
