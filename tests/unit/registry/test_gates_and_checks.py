"""Promotion gates, ETag matching and the TorchScript check, without any service."""

from __future__ import annotations

import io

import pytest
import torch

from kiln_core.catalog import ModelSignature, TensorSpec
from kiln_registry import torchscript
from kiln_registry.api.common import etag_matches
from kiln_registry.models import ModelVersion, PolicyBody
from kiln_registry.promotion import evaluate_gates


def _version(metrics: dict[str, float], split: str | None = "val", number: int = 1) -> ModelVersion:
    return ModelVersion(
        model_id="m",
        number=number,
        metrics=metrics,
        evaluation_split=split,
        artifact={},
        sha256="0" * 64,
        size_bytes=1,
    )


POLICY = PolicyBody.model_validate(
    {
        "metric_gates": [
            {"metric": "accuracy", "op": ">=", "value": 0.8},
            {"metric": "latency_ms", "op": "<", "value": 50},
        ],
        "regression_gates": [
            {"metric": "accuracy", "max_drop": 0.02},
            {"metric": "latency_ms", "max_drop": 5, "higher_is_better": False},
        ],
    }
)


def test_a_version_passing_every_gate_has_no_failures() -> None:
    production = _version({"accuracy": 0.85, "latency_ms": 20}, number=1)
    candidate = _version({"accuracy": 0.84, "latency_ms": 24}, number=2)
    assert evaluate_gates(POLICY, candidate, production) == []


def test_each_failing_gate_is_listed() -> None:
    production = _version({"accuracy": 0.9, "latency_ms": 20}, number=1)
    candidate = _version({"accuracy": 0.79, "latency_ms": 60}, number=2)
    failed = evaluate_gates(POLICY, candidate, production)
    assert sorted((g["gate"], g["metric"]) for g in failed) == [
        ("metric", "accuracy"),
        ("metric", "latency_ms"),
        ("regression", "accuracy"),
        ("regression", "latency_ms"),
    ]


def test_a_missing_metric_fails_its_gates() -> None:
    production = _version({"accuracy": 0.9}, number=1)
    failed = evaluate_gates(POLICY, _version({"latency_ms": 10}, number=2), production)
    assert {(g["gate"], g["reason"]) for g in failed if g["metric"] == "accuracy"} == {
        ("metric", "metric missing"),
        ("regression", "metric missing"),
    }


def test_regression_needs_the_same_evaluation_split() -> None:
    production = _version({"accuracy": 0.9, "latency_ms": 20}, split="val", number=1)
    candidate = _version({"accuracy": 0.95, "latency_ms": 20}, split="test", number=2)
    reasons = [g["reason"] for g in evaluate_gates(POLICY, candidate, production)]
    assert len(reasons) == 2 and all(r.startswith("not comparable") for r in reasons)


def test_without_production_only_metric_gates_apply() -> None:
    assert evaluate_gates(POLICY, _version({"accuracy": 0.81, "latency_ms": 1}), None) == []


def test_policy_refuses_unknown_roles() -> None:
    with pytest.raises(ValueError, match="promoter_roles"):
        PolicyBody.model_validate({"promoter_roles": ["wizard"]})


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abd"', False),
        ("", False),
        (None, False),
    ],
)
def test_etag_matching(header: str | None, matches: bool) -> None:
    assert etag_matches(header, "abc") is matches


def _scripted(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module.eval()), buffer)
    return buffer.getvalue()


def _signature(in_dtype: str = "FP32", out_dtype: str = "FP32") -> ModelSignature:
    return ModelSignature(
        inputs=[TensorSpec(name="x", dtype=in_dtype, shape=[4])],
        outputs=[TensorSpec(name="y", dtype=out_dtype, shape=[2])],
    )


def test_check_accepts_a_matching_model_with_variable_dimensions() -> None:
    raw = _scripted(torch.nn.Linear(4, 2))
    signature = ModelSignature(
        inputs=[TensorSpec(name="x", dtype="FP32", shape=[4])],
        outputs=[TensorSpec(name="y", dtype="FP32", shape=[-1])],
    )
    assert torchscript.check(raw, signature, ["a", "b"]) == {"output_shapes": [[2]]}


def test_check_refuses_a_wrong_output_dtype_and_unknown_dtypes() -> None:
    raw = _scripted(torch.nn.Linear(4, 2))
    with pytest.raises(torchscript.InvalidModel, match="declared INT64"):
        torchscript.check(raw, _signature(out_dtype="INT64"), [])
    with pytest.raises(torchscript.InvalidModel, match="cannot be checked"):
        torchscript.check(raw, _signature(in_dtype="BYTES"), [])


def test_quantisation_keeps_torchscript_and_shrinks_linear_layers() -> None:
    raw = _scripted(torch.nn.Sequential(torch.nn.Linear(4, 512), torch.nn.Linear(512, 2)))
    quantized = torchscript.quantize_int8(raw)
    assert len(quantized) < len(raw) * 0.6
    report = torchscript.agreement(raw, quantized, _signature(), samples=32, seed=0)
    assert report["samples"] == 32 and report["top1_agreement"] >= 0.9


class _Forever(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while bool(x.sum() > -1.0e30):
            x = x + 1.0
        return x[:, :2]


def test_isolated_check_stops_a_model_that_never_returns() -> None:
    raw = _scripted(_Forever())
    with pytest.raises(torchscript.InvalidModel, match="did not finish within 3 s"):
        torchscript.check_isolated(raw, _signature(), [], timeout_s=3)


def test_isolated_check_reports_like_the_in_process_one() -> None:
    raw = _scripted(torch.nn.Linear(4, 2))
    assert torchscript.check_isolated(raw, _signature(), ["a", "b"]) == {"output_shapes": [[2]]}
    with pytest.raises(torchscript.InvalidModel, match="label map") as refused:
        torchscript.check_isolated(raw, _signature(), ["a", "b", "c"])
    assert refused.value.extra["problems"]
    with pytest.raises(torchscript.InvalidModel, match="not a TorchScript archive"):
        torchscript.check_isolated(b"junk", _signature(), [])


def test_isolated_compression_returns_the_int8_file_and_its_agreement() -> None:
    raw = _scripted(torch.nn.Sequential(torch.nn.Linear(4, 512), torch.nn.Linear(512, 2)))
    quantized, report = torchscript.compress_isolated(raw, _signature(), [], samples=16, seed=0)
    assert len(quantized) < len(raw) * 0.6 and report["top1_agreement"] >= 0.9
    assert "quantized::linear_dynamic" in str(torch.jit.load(io.BytesIO(quantized)).inlined_graph)


DETECTION_POLICY = PolicyBody.model_validate(
    {
        "metric_gates": [{"metric": "map50", "op": ">=", "value": 0.8}],
        "regression_gates": [{"metric": "ap.*", "max_drop": 0.05}],
    }
)


def test_detection_gates_check_map50_and_every_class_ap_against_production() -> None:
    production = _version({"map50": 0.9, "ap.cat": 0.7, "ap.dog": 0.6, "ap50.dog": 0.9}, number=1)
    fine = _version({"map50": 0.85, "ap.cat": 0.66, "ap.dog": 0.7}, number=2)
    assert evaluate_gates(DETECTION_POLICY, fine, production) == []
    worse = _version({"map50": 0.79, "ap.cat": 0.75, "ap.dog": 0.5}, number=3)
    failed = evaluate_gates(DETECTION_POLICY, worse, production)
    assert sorted((g["gate"], g["metric"]) for g in failed) == [
        ("metric", "map50"),
        ("regression", "ap.dog"),  # ap50.dog is not under "ap."
    ]
    assert failed[-1]["drop"] == pytest.approx(0.1)
    # A class the candidate no longer reports is a missing metric.
    missing = _version({"map50": 0.9, "ap.cat": 0.7}, number=4)
    assert [
        (g["metric"], g["reason"]) for g in evaluate_gates(DETECTION_POLICY, missing, production)
    ] == [("ap.dog", "metric missing")]


def test_check_runs_a_scripted_detector_and_skips_the_label_column_rule() -> None:
    from kiln_training.detection import ServableDetector, build_detector, detector_signature
    from kiln_training.templates import get_template, validate_params

    params = validate_params(get_template("detection-fcos"), {"input_size": 32, "width": 16})
    model = build_detector(params, 3, 5, [0.5] * 3, [0.25] * 3).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(ServableDetector(model)), buffer)
    result = torchscript.check(buffer.getvalue(), detector_signature(3), ["a", "b", "c", "d", "e"])
    assert len(result["output_shapes"][0]) == 2 and result["output_shapes"][0][1] == 6
