"""Serving logic without services: canary verdicts, routing picks, request parsing, endpoint
validation and the Python-backend model run with a stand-in for Triton's utilities."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import sys
import types
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from kiln_core.db import utcnow
from kiln_core.errors import BadRequest
from kiln_serving import canary
from kiln_serving.model_repository import PREPROCESSING_FILE, PREPROCESSING_SOURCE, InputShape
from kiln_serving.models import EndpointConfig, EndpointCreate
from kiln_serving.predict import answer_scores, parse_inputs
from kiln_serving.traffic import Outcomes, Route, RoutingTable, ServingVersion
from kiln_serving.triton import InferenceFailed, TritonGateway
from tests.serving.conftest import torchscript


def version(n: int, kind: str = "tabular") -> ServingVersion:
    shape = (
        InputShape("features", "FP32", [4]) if kind == "tabular" else InputShape(kind, "BYTES", [1])
    )
    return ServingVersion(f"d{n}", f"m--v{n}", "m", n, f"v{n}", ["a", "b"], kind, shape, None)


def analysis_with(cand: Outcomes, stable: Outcomes, age_s: float = 0.0) -> dict[str, Any]:
    a = canary.fresh_analysis()
    a["step_started_at"] = (utcnow() - timedelta(seconds=age_s)).isoformat()
    canary.merge(a, "candidate", cand)
    canary.merge(a, "stable", stable)
    return a


CONFIG = EndpointConfig(
    canary_steps=[10, 50, 100],
    min_requests_per_step=10,
    max_error_rate=0.1,
    max_latency_ratio=2.0,
    step_interval_s=5,
    warmup_requests=0,
)


def test_canary_waits_for_enough_requests() -> None:
    a = analysis_with(Outcomes(requests=5, errors=5), Outcomes(requests=50), age_s=60)
    assert canary.judge(CONFIG, a, utcnow()).action == "wait"


def test_canary_rolls_back_on_error_rate() -> None:
    a = analysis_with(Outcomes(requests=20, errors=3, latencies_ms=[1.0] * 17), Outcomes())
    verdict = canary.judge(CONFIG, a, utcnow())
    assert verdict.action == "rollback" and "error rate" in verdict.reason


def test_canary_rolls_back_on_slow_p99_against_stable() -> None:
    a = analysis_with(
        Outcomes(requests=20, latencies_ms=[10.0] * 20),
        Outcomes(requests=20, latencies_ms=[2.0] * 20),
    )
    verdict = canary.judge(CONFIG, a, utcnow())
    assert verdict.action == "rollback" and "p99" in verdict.reason


def test_canary_steps_after_the_interval_and_promotes_at_the_last_step() -> None:
    healthy = Outcomes(requests=20, latencies_ms=[2.0] * 20)
    young = analysis_with(healthy, Outcomes(requests=20, latencies_ms=[2.0] * 20), age_s=1)
    assert canary.judge(CONFIG, young, utcnow()).action == "wait"
    old = analysis_with(healthy, Outcomes(requests=20, latencies_ms=[2.0] * 20), age_s=10)
    assert canary.judge(CONFIG, old, utcnow()).action == "step"
    old["step"] = 2
    assert canary.judge(CONFIG, old, utcnow()).action == "promote"


def test_the_score_shift_is_the_ks_statistic_and_rolls_back_only_when_configured() -> None:
    rng = np.random.default_rng(0)
    same = list(rng.uniform(0.6, 0.9, 200))
    low = list(rng.uniform(0.1, 0.4, 200))
    assert canary.score_shift(same, same) == 0.0
    assert canary.score_shift(same, low) == 1.0  # disjoint
    assert canary.score_shift(same[:10], low) is None  # too few to compare
    half = list(rng.uniform(0.6, 0.9, 100)) + list(rng.uniform(0.1, 0.4, 100))
    assert canary.score_shift(half, same) == pytest.approx(0.5, abs=0.02)

    healthy = [2.0] * 40
    shifted = analysis_with(
        Outcomes(requests=40, latencies_ms=healthy, scores=list(rng.uniform(0.1, 0.4, 40))),
        Outcomes(requests=40, latencies_ms=healthy, scores=list(rng.uniform(0.6, 0.9, 40))),
        age_s=10,
    )
    assert shifted["score_shift"] == 1.0
    assert canary.judge(CONFIG, shifted, utcnow()).action == "step"  # reported, not judged
    gated = CONFIG.model_copy(update={"max_score_shift": 0.3})
    verdict = canary.judge(gated, shifted, utcnow())
    assert verdict.action == "rollback" and "KS 1.00" in verdict.reason
    summary = canary.summary(shifted)
    assert "scores" not in summary["candidate"] and summary["candidate"]["score_mean"] < 0.4


def test_answer_scores_are_top_probabilities_or_best_box_scores() -> None:
    probs = np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    assert answer_scores(version(1), probs) == pytest.approx([0.8, 0.6])
    detector = dataclasses.replace(version(2, "image"), detector=True)
    boxes = np.array(
        [[[0, 0, 1, 1, 0.3, 2], [0, 0, 1, 1, 0.7, 1]], [[0, 0, 0, 0, 0, -1], [0, 0, 0, 0, 0, -1]]],
        dtype=np.float32,
    )
    assert answer_scores(detector, boxes) == pytest.approx([0.7, 0.0])  # none found: 0
    assert answer_scores(detector, np.zeros((3, 0, 6), np.float32)) == [0.0] * 3


def test_the_candidates_cold_first_requests_do_not_count_against_its_latency() -> None:
    config = CONFIG.model_copy(update={"warmup_requests": 5})
    cold_then_warm = [400.0, 250.0, 90.0, 40.0, 20.0] + [2.0] * 20
    a = canary.fresh_analysis()
    a["step_started_at"] = (utcnow() - timedelta(seconds=10)).isoformat()
    # Outcomes arrive in batches (one per analysis tick); the warm-up spans the first two.
    for batch in (cold_then_warm[:3], cold_then_warm[3:12], cold_then_warm[12:]):
        out = Outcomes(requests=len(batch), latencies_ms=list(batch))
        canary.merge(a, "candidate", out, warmup=config.warmup_requests)
    canary.merge(a, "stable", Outcomes(requests=20, latencies_ms=[2.0] * 20))
    assert a["candidate"]["warmup_ignored"] == 5
    assert a["candidate"]["latencies"] == [2.0] * 20 and a["candidate"]["requests"] == 25
    assert canary.judge(config, a, utcnow()).action == "step"
    # Without the warm-up window the same requests fail the latency check.
    b = analysis_with(Outcomes(requests=25, latencies_ms=cold_then_warm), Outcomes(), age_s=10)
    canary.merge(b, "stable", Outcomes(requests=20, latencies_ms=[2.0] * 20))
    verdict = canary.judge(CONFIG, b, utcnow())
    assert verdict.action == "rollback" and "p99" in verdict.reason


def test_a_warming_candidate_waits_but_its_errors_still_roll_it_back() -> None:
    config = CONFIG.model_copy(update={"warmup_requests": 50})
    stable = Outcomes(requests=20, latencies_ms=[2.0] * 20)
    warming = analysis_with(Outcomes(requests=30, latencies_ms=[2.0] * 30), stable, age_s=60)
    assert canary.judge(config, warming, utcnow()).action == "wait"  # 30 of 50 warm-up seen
    failing = canary.fresh_analysis()
    canary.merge(failing, "candidate", Outcomes(requests=30, errors=10, latencies_ms=[2.0] * 20))
    verdict = canary.judge(config, failing, utcnow())
    assert verdict.action == "rollback" and "error rate" in verdict.reason


def test_a_slow_candidate_after_its_warm_up_is_still_rolled_back() -> None:
    config = CONFIG.model_copy(update={"warmup_requests": 5})
    a = canary.fresh_analysis()
    canary.merge(a, "candidate", Outcomes(requests=25, latencies_ms=[30.0] * 25), warmup=5)
    canary.merge(a, "stable", Outcomes(requests=20, latencies_ms=[2.0] * 20))
    verdict = canary.judge(config, a, utcnow())
    assert verdict.action == "rollback" and "p99" in verdict.reason


def test_the_warm_up_is_counted_once_per_rollout_across_steps() -> None:
    a = canary.fresh_analysis()
    canary.merge(a, "candidate", Outcomes(requests=3, latencies_ms=[50.0] * 3), warmup=5)
    nxt = canary.fresh_analysis(step=1, warmed=canary.warmed(a))
    canary.merge(nxt, "candidate", Outcomes(requests=4, latencies_ms=[9.0, 8.0, 1.0, 1.0]), 5)
    assert nxt["candidate"]["warmup_ignored"] == 5
    assert nxt["candidate"]["latencies"] == [1.0, 1.0]
    assert canary.warmed(None) == 0


def test_the_routing_table_is_stale_when_an_endpoint_changes_comes_or_goes() -> None:
    table = RoutingTable()
    assert not table.stale({}) and table.stale({"e": 1})
    table._generations = {"e": 1, "f": 3}  # as a refresh leaves it
    assert not table.stale({"e": 1, "f": 3})
    assert table.stale({"e": 2, "f": 3})  # changed
    assert table.stale({"e": 1})  # deleted
    assert table.stale({"e": 1, "f": 3, "g": 1})  # created


def test_ab_routing_is_sticky_per_key_and_shadow_answers_with_stable() -> None:
    ab = Route("e", "ab", CONFIG, version(1), version(2), 50.0, 1)
    for key in ("alice", "bob", "carol", "dave"):
        first = ab.pick(key)[0]
        assert all(ab.pick(key)[0] == first for _ in range(20))
    picked = {ab.pick(f"user-{i}")[0].version for i in range(200)}  # type: ignore[union-attr]
    assert picked == {1, 2}
    shadow = Route("e", "shadow", CONFIG, version(1), version(2), 0.0, 1)
    assert shadow.pick(None) == (version(1), version(2))
    alone = Route("e", "canary", CONFIG, version(1), None, 0.0, 1)
    assert alone.pick(None) == (version(1), None)


def test_tabular_inputs_are_checked_against_the_signature() -> None:
    data, raws = parse_inputs(version(1), b'{"inputs": [1, 2, 3, 4]}', "application/json", 8)
    assert data.shape == (1, 4) and data.dtype == np.float32 and raws == [[1, 2, 3, 4]]
    with pytest.raises(BadRequest, match="shape"):
        parse_inputs(version(1), b'{"inputs": [[1, 2]]}', "application/json", 8)
    with pytest.raises(BadRequest, match="at most"):
        parse_inputs(version(1), b'{"inputs": [[1, 2, 3, 4]]}', "application/json", 0)
    with pytest.raises(BadRequest):
        parse_inputs(version(1), b"\x89PNG", "image/png", 8)
    with pytest.raises(BadRequest):
        parse_inputs(version(1), b"not json", "application/json", 8)


def test_image_inputs_arrive_as_bytes_or_base64() -> None:
    data, raws = parse_inputs(version(1, "image"), b"\xff\xd8\xffjpeg", "image/jpeg", 8)
    assert data.shape == (1, 1) and raws == [(b"\xff\xd8\xffjpeg", "image/jpeg")]
    body = b'{"inputs": ["' + base64.b64encode(b"\x89PNG\r\n\x1a\nxx") + b'"]}'
    data, raws = parse_inputs(version(1, "image"), body, "application/json", 8)
    assert raws[0][1] == "image/png"
    with pytest.raises(BadRequest, match="base64"):
        parse_inputs(version(1, "image"), b'{"inputs": ["%%%"]}', "application/json", 8)


def test_endpoint_names_and_steps_are_validated() -> None:
    with pytest.raises(ValidationError):
        EndpointCreate(name="Bad_Name", model_name="m")
    with pytest.raises(ValidationError):
        EndpointCreate(name="ok", model_name="m", canary_steps=[50, 10])
    assert EndpointCreate(name="ok", model_name="m", canary_steps=[5, 20]).canary_steps == [
        5,
        20,
        100,
    ]


# --- the Python-backend model, with a stand-in for triton_python_backend_utils ---------------


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _Response:
    def __init__(self, output_tensors: list[_Tensor], error: Exception | None = None) -> None:
        self.output_tensors, self.error = output_tensors, error


class _Request:
    def __init__(self, **inputs: np.ndarray) -> None:
        self.inputs = inputs


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = _Tensor  # type: ignore[attr-defined]
    fake.InferenceResponse = _Response  # type: ignore[attr-defined]
    fake.TritonError = RuntimeError  # type: ignore[attr-defined]
    fake.get_input_tensor_by_name = lambda r, n: _Tensor(n, r.inputs[n])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    monkeypatch.delitem(sys.modules, "kiln_serving.triton_backend", raising=False)
    import kiln_serving.triton_backend as module

    return module


def _model_folder(tmp_path: Path) -> Path:
    """A model version's folder as serving ships it: the backend loads preprocessing from it."""
    folder = tmp_path / "1"
    folder.mkdir()
    (folder / PREPROCESSING_FILE).write_bytes(PREPROCESSING_SOURCE)
    return folder


def test_image_preprocessing_resizes_normalises_and_is_chw(
    backend: types.ModuleType, tmp_path: Path
) -> None:
    shipped = backend.load_preprocessing(str(_model_folder(tmp_path)))
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(buf, format="PNG")
    spec = {"kind": "image", "size": [8, 6], "mode": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3}
    x = shipped.preprocess(spec, buf.getvalue())
    assert x.shape == (3, 8, 6) and x.dtype == np.float32
    assert np.allclose(x[0], 1.0) and np.allclose(x[1], -1.0)
    grey = shipped.preprocess({"kind": "image", "size": [4, 4], "mode": "L"}, buf.getvalue())
    assert grey.shape == (1, 4, 4)


def test_text_tokens_hash_with_crc32(backend: types.ModuleType, tmp_path: Path) -> None:
    shipped = backend.load_preprocessing(str(_model_folder(tmp_path)))
    ids = shipped.tokenize("Hello  world", 1000)
    assert ids.tolist() == [zlib.crc32(b"hello") % 1000, zlib.crc32(b"world") % 1000]


def test_a_failing_input_fails_only_its_own_request(
    backend: types.ModuleType, tmp_path: Path
) -> None:
    import json

    folder = _model_folder(tmp_path)
    (folder / "model.pt").write_bytes(torchscript(favour=1, fail_above=0.5))
    meta = {
        "input_name": "features",
        "preprocessing": {"kind": "tabular", "mean": None, "std": None},
        "signature": {"inputs": [{"name": "features", "dtype": "FP32", "shape": [4]}]},
    }
    (folder / "kiln.json").write_text(json.dumps(meta))
    model = backend.TritonPythonModel()
    model.initialize({"model_repository": str(tmp_path), "model_version": "1"})
    good = _Request(features=np.zeros((2, 4), np.float32))
    bad = _Request(features=np.ones((1, 4), np.float32))
    responses = model.execute([good, bad, good])
    assert responses[1].error is not None and "model failed" in str(responses[1].error)
    for r in (responses[0], responses[2]):
        probs = r.output_tensors[0].as_numpy()
        assert r.error is None and probs.shape == (2, 3)
        assert np.allclose(probs.sum(axis=1), 1.0) and (probs.argmax(axis=1) == 1).all()


class _TextNet(torch.nn.Module):
    """Counts non-padding tokens: class 1 for texts of three or more words."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = (ids != 0).sum(dim=1).float()
        return torch.stack([3.0 - n, n - 2.5], dim=1) * 4


def test_text_requests_are_tokenised_and_right_padded_into_one_batch(
    backend: types.ModuleType, tmp_path: Path
) -> None:
    import json

    folder = _model_folder(tmp_path)
    torch.jit.save(torch.jit.script(_TextNet()), str(folder / "model.pt"))
    meta = {
        "input_name": "text",
        "preprocessing": {"kind": "text", "buckets": 5000, "hash": "crc32"},
        "signature": {"inputs": [{"name": "input", "dtype": "INT64", "shape": [-1]}]},
    }
    (folder / "kiln.json").write_text(json.dumps(meta))
    model = backend.TritonPythonModel()
    model.initialize({"model_repository": str(tmp_path), "model_version": "1"})
    short = _Request(text=np.array([[b"hi there"]], dtype=object))
    long = _Request(text=np.array([[b"one two three four"], [b"a"]], dtype=object))
    out = [
        r.output_tensors[0].as_numpy().argmax(axis=1).tolist() for r in model.execute([short, long])
    ]
    assert out == [[0], [1, 0]]


class _CountingTriton(TritonGateway):
    """The gateway with Triton's answer stood in: rows sum to the probability of class 1; a
    row of -1 is an input the model rejects."""

    def __init__(self) -> None:
        super().__init__("grpc://127.0.0.1:1")
        self.calls: list[int] = []

    async def infer(
        self, model: str, input_name: str, datatype: str, data: np.ndarray, timeout_s: float = 30
    ) -> np.ndarray:
        self.calls.append(data.shape[0])
        await asyncio.sleep(0.01)
        if (data == -1).all(axis=1).any():
            raise InferenceFailed("bad input")
        s = data.sum(axis=1, keepdims=True)
        return np.concatenate([1 - s, s], axis=1)

    infer_streamed = infer  # shared calls go over the stream; singles (retries) unary


async def test_concurrent_requests_share_triton_calls_and_keep_their_own_rows() -> None:
    triton = _CountingTriton()
    rows = [np.full((1 + i % 3, 4), i / 1000, np.float32) for i in range(20)]
    answers = await asyncio.gather(
        *(triton.infer_shared("m", "features", "FP32", r, max_rows=8) for r in rows)
    )
    for r, probs in zip(rows, answers, strict=True):
        assert probs.shape == (r.shape[0], 2) and np.allclose(probs[:, 1], r.sum(axis=1))
    assert len(triton.calls) < len(rows) and max(triton.calls) <= 8
    assert triton._lanes == {}  # nothing left behind once idle


async def test_a_rejected_row_in_a_shared_call_fails_only_its_own_request() -> None:
    triton = _CountingTriton()
    rows = [np.full((1, 4), -1.0 if i == 5 else 0.1, np.float32) for i in range(8)]
    answers = await asyncio.gather(
        *(triton.infer_shared("m", "features", "FP32", r, max_rows=64) for r in rows),
        return_exceptions=True,
    )
    failed = [i for i, a in enumerate(answers) if isinstance(a, Exception)]
    assert failed == [5] and isinstance(answers[5], InferenceFailed)
    assert all(np.allclose(a[:, 1], 0.4) for a in answers if isinstance(a, np.ndarray))


async def test_requests_of_one_event_loop_turn_share_the_first_call_and_a_lone_one_is_not_held() -> (
    None
):
    triton = _CountingTriton()
    rows = [np.full((1, 4), 0.1, np.float32) for _ in range(6)]
    await asyncio.gather(*(triton.infer_shared("m", "features", "FP32", r, 64) for r in rows))
    assert triton.calls == [6]  # arrived together: one call, not one plus a batch of five
    alone = await triton.infer_shared("m", "features", "FP32", rows[0], 64)
    assert triton.calls == [6, 1] and alone.shape == (1, 2)  # a lone request goes on its own
