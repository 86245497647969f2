"""The stream serving's shared calls go over (``ModelStreamInfer``), against the shared Triton:
answers reach the request that asked, an error reaches only its own request, and the stream
outlives a request Triton refuses."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from kiln_core.catalog import ModelArtifact, ModelSignature, Preprocessing, TensorSpec
from kiln_serving.model_repository import build_model
from kiln_serving.triton import InferenceFailed, TritonGateway, TritonUnavailable
from tests.serving.conftest import FEATURES, LABELS, torchscript


@pytest.fixture
async def loaded(triton_url: str, unique: str) -> AsyncIterator[tuple[TritonGateway, str]]:
    """A started gateway and a model loaded into Triton that fails on rows whose first
    feature is above 5."""
    data = torchscript(favour=1, fail_above=5.0, sharpness=2.0)
    artifact = ModelArtifact(
        uri=f"s3://kiln/tests/{unique}.pt",
        key=f"tests/{unique}.pt",
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        signature=ModelSignature(
            inputs=[TensorSpec(name="features", dtype="FP32", shape=[FEATURES])],
            outputs=[TensorSpec(name="logits", dtype="FP32", shape=[len(LABELS)])],
        ),
        label_map=LABELS,
        preprocessing=Preprocessing(kind="tabular"),
    )
    config, files = build_model(artifact, data, instance_count=1, max_batch_size=64)
    gateway = TritonGateway(triton_url)
    await gateway.start()
    name = f"stream-{unique}"
    await gateway.load(name, config, files)
    try:
        yield gateway, name
    finally:
        await gateway.unload(name)
        await gateway.stop()


def rows(values: list[float]) -> list[np.ndarray]:
    return [np.full((1 + i % 2, FEATURES), v, np.float32) for i, v in enumerate(values)]


async def test_shared_calls_over_the_stream_answer_each_request_with_its_own_rows(
    loaded: tuple[TritonGateway, str],
) -> None:
    gateway, model = loaded
    inputs = rows([i / 10 for i in range(12)])
    shared = await asyncio.gather(
        *(gateway.infer_shared(model, "features", "FP32", x, max_rows=64) for x in inputs)
    )
    for x, probs in zip(inputs, shared, strict=True):
        alone = await gateway.infer(model, "features", "FP32", x)  # unary, one request
        assert probs.shape == (x.shape[0], len(LABELS))
        assert np.allclose(probs, alone, atol=1e-6)
    assert gateway._stream is not None and not gateway._stream.broken


async def test_a_row_the_model_fails_on_fails_only_its_own_request(
    loaded: tuple[TritonGateway, str],
) -> None:
    gateway, model = loaded
    inputs = rows([0.1, 0.2, 9.0, 0.3, 0.4, 0.5])  # the third makes the model raise
    answers = await asyncio.gather(
        *(gateway.infer_shared(model, "features", "FP32", x, max_rows=64) for x in inputs),
        return_exceptions=True,
    )
    failed = [i for i, a in enumerate(answers) if isinstance(a, BaseException)]
    assert failed == [2], answers
    assert isinstance(answers[2], InferenceFailed)
    assert "fails on large inputs" in str(answers[2])


async def test_a_refused_request_is_its_own_error_and_the_stream_stays_open(
    loaded: tuple[TritonGateway, str],
) -> None:
    gateway, model = loaded
    good = np.full((2, FEATURES), 0.1, np.float32)
    wrong_shape = np.full((2, FEATURES - 1), 0.1, np.float32)
    answers = await asyncio.gather(
        gateway.infer_streamed(model, "features", "FP32", good),
        gateway.infer_streamed(model, "features", "FP32", wrong_shape),
        gateway.infer_streamed(f"{model}-missing", "features", "FP32", good),
        gateway.infer_streamed(model, "features", "FP32", good),
        return_exceptions=True,
    )
    assert isinstance(answers[0], np.ndarray) and answers[0].shape == (2, len(LABELS))
    assert isinstance(answers[1], InferenceFailed) and "shape" in str(answers[1])
    assert isinstance(answers[2], TritonUnavailable) and "not found" in str(answers[2])
    assert isinstance(answers[3], np.ndarray)
    stream = gateway._stream
    assert stream is not None and not stream.broken
    again = await gateway.infer_streamed(model, "features", "FP32", good)
    assert gateway._stream is stream and np.allclose(again, answers[0])


async def test_a_broken_stream_fails_its_waiting_requests_as_unavailable_and_reopens(
    loaded: tuple[TritonGateway, str],
) -> None:
    gateway, model = loaded
    good = np.full((1, FEATURES), 0.1, np.float32)
    await gateway.infer_streamed(model, "features", "FP32", good)
    stream = gateway._stream
    assert stream is not None
    waiting = asyncio.ensure_future(gateway.infer_streamed(model, "features", "FP32", good))
    await asyncio.sleep(0)  # queued on the stream
    stream._call.cancel()  # the connection drops under it
    with pytest.raises(TritonUnavailable):
        await waiting
    assert stream.broken
    answer = await gateway.infer_streamed(model, "features", "FP32", good)
    assert answer.shape == (1, len(LABELS)) and gateway._stream is not stream
