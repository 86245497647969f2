"""The detection-fcos template on tiny synthetic shape images: it trains and reports COCO
metrics, pauses and crash-resumes bit-identically, refuses unusable versions with reasons,
and exports a TorchScript detector that answers boxes in the input's own pixels."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from kiln_core.manifest import ClassLabel
from kiln_training.detection_evaluation import DetectionReport
from kiln_training.examples import DataRef, UnusableData
from kiln_training.templates import InvalidHyperparameters, get_template, validate_params
from kiln_training.trainer import RunOutcome, RunSpec, plain_training_loop, run_training
from tests.unit.training.synthetic import ScriptedControl
from tests.unit.training.synthetic_boxes import BoxedImage, shapes, write_boxed_version

TINY = {"input_size": 32, "image_mode": "L", "width": 4, "batch_size": 4, "anchor_size": 8}


def _spec(data: DataRef, **params: Any) -> RunSpec:
    merged = {**TINY, **params}
    return RunSpec(
        template="detection-fcos",
        params=validate_params(get_template("detection-fcos"), merged),
        seed=3,
        data=data,
        num_threads=1,
    )


def _weights(outcome: RunOutcome) -> dict[str, torch.Tensor]:
    assert outcome.model is not None
    loaded: dict[str, torch.Tensor] = torch.load(
        io.BytesIO(outcome.model.state_dict), weights_only=True
    )
    return loaded


def _assert_identical(a: RunOutcome, b: RunOutcome) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    assert a.metrics == {
        **b.metrics,
        "train_seconds": a.metrics["train_seconds"],
        "samples_per_s": a.metrics["samples_per_s"],
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> DataRef:
    return write_boxed_version(tmp_path_factory.mktemp("shapes"), shapes(20, size=32))


def test_a_detector_trains_and_reports_coco_metrics_and_bad_cases(tiny: DataRef) -> None:
    control = ScriptedControl()
    outcome = run_training(_spec(tiny, epochs=2), control)
    assert outcome.status == "succeeded" and outcome.step == 2 * 4
    assert set(outcome.metrics) >= {
        "map",
        "map50",
        "map75",
        "recall",
        "ap.block",
        "ap50.ring",
        "recall.block",
        "epochs",
        "steps",
        "train_seconds",
    }
    assert all(0.0 <= outcome.metrics[k] <= 1.0 for k in ("map", "map50", "recall"))
    report = outcome.evaluation
    assert isinstance(report, DetectionReport) and report.support == 4
    assert report.labels == ["block", "ring"]
    # Bad cases carry both sets of boxes; the flat form is what the service stores.
    assert report.bad_cases_total == len(report.box_cases) > 0
    case = report.box_cases[0]
    assert case.missed + case.false > 0 and case.truth
    assert set(report.bad_cases[0]) == {"item_id", "label", "predicted", "confidence"}
    assert control.epochs[0].train_accuracy is None and control.steps[0].accuracy is None
    assert outcome.model is not None and outcome.model.label_map == ["block", "ring"]
    assert outcome.model.signature.outputs[0].name == "detections"


def test_pause_and_crash_resume_are_bit_identical(tiny: DataRef) -> None:
    spec = _spec(tiny, epochs=2)
    spec.checkpoint_every_steps = 2
    straight_control = ScriptedControl()
    straight = run_training(spec, straight_control)

    control = ScriptedControl(pause_at_step=3)
    paused = run_training(spec, control)
    assert paused.status == "paused" and paused.step == 3
    resumed = run_training(spec, control)
    assert resumed.status == "succeeded" and control.steps[3].step == 4
    _assert_identical(straight, resumed)
    assert [s.loss for s in control.steps] == [s.loss for s in straight_control.steps]

    # A worker that died after step 7 resumes from the periodic checkpoint at step 6.
    survivor = ScriptedControl(checkpoint=straight_control.saved[6])
    crashed = run_training(spec, survivor)
    assert survivor.steps[0].step == 7
    _assert_identical(straight, crashed)


def test_incremental_mode_warm_starts_from_a_registered_detector(tiny: DataRef) -> None:
    first = run_training(_spec(tiny, epochs=1), ScriptedControl())
    assert first.model is not None
    spec = _spec(tiny, epochs=1, lr=1e-6)
    spec.init_weights = first.model.state_dict
    tuned = run_training(spec, ScriptedControl())
    before, after = _weights(first), _weights(tuned)
    # With a vanishing learning rate the fine-tuned weights stay where the parent left them.
    name = "head.classification_head.cls_logits.weight"
    assert torch.allclose(before[name], after[name], atol=1e-4)
    fresh = _weights(run_training(_spec(tiny, epochs=1, lr=1e-6), ScriptedControl()))
    assert not torch.allclose(fresh[name], after[name], atol=1e-4)


def _write(tmp_path: Path, images: list[BoxedImage]) -> DataRef:
    return write_boxed_version(tmp_path, images)


def test_a_version_without_boxes_fails_with_the_reason(tmp_path: Path) -> None:
    images = shapes(4, size=32)
    for image in images:
        image.boxes = []
        image.extra_labels = [ClassLabel(label="block")]
    with pytest.raises(UnusableData, match="items with box labels"):
        run_training(_spec(_write(tmp_path, images)), ScriptedControl())


def test_a_box_outside_its_image_fails_naming_the_item(tmp_path: Path) -> None:
    images = shapes(4, size=32)
    images[2].boxes = [("block", [20.0, 20.0, 20.0, 5.0])]
    with pytest.raises(UnusableData, match=r"outside their image.*img-0002"):
        run_training(_spec(_write(tmp_path, images)), ScriptedControl())


def test_a_class_missing_from_the_label_map_fails_naming_it(tmp_path: Path) -> None:
    data = _write(tmp_path, shapes(6, size=32))
    with pytest.raises(UnusableData, match="missing from the label map.*'ring'"):
        run_training(_spec(data, classes="block"), ScriptedControl())


def test_detection_hyperparameters_are_typed_and_ranged() -> None:
    template = get_template("detection-fcos")
    with pytest.raises(InvalidHyperparameters) as caught:
        validate_params(template, {"score_threshold": 1.5, "nms_threshold": "x", "input_size": 8})
    fields = {e["field"] for e in caught.value.extra["errors"]}
    assert fields == {"score_threshold", "nms_threshold", "input_size"}


def test_the_exported_detector_answers_boxes_in_the_input_pixels(tiny: DataRef) -> None:
    outcome = run_training(_spec(tiny, epochs=1, score_threshold=0.0), ScriptedControl())
    assert outcome.model is not None
    scripted = torch.jit.load(io.BytesIO(outcome.model.torchscript))
    rng = np.random.default_rng(1)
    small = torch.from_numpy(rng.random((1, 1, 32, 32), dtype=np.float32))
    # The same picture at twice the size: boxes scale with it.
    big = torch.nn.functional.interpolate(small, scale_factor=2, mode="nearest")
    a, b = scripted(small), scripted(big)
    assert a.shape[0] == 1 and a.shape[2] == 6 and a.shape[1] > 0
    assert float(b[0, :, :4].max()) > 32  # boxes in the 64-pixel image's coordinates
    assert float(a[0, :, :4].max()) <= 32
    assert set(a[0, :, 5].tolist()) <= {-1.0, 0.0, 1.0}
    # A non-square image keeps its own coordinates too.
    wide = torch.from_numpy(rng.random((1, 1, 20, 48), dtype=np.float32))
    out = scripted(wide)
    kept = out[0][out[0, :, 5] >= 0]
    assert float(kept[:, 2].max()) <= 48.01 and float(kept[:, 3].max()) <= 20.01


def test_plain_detection_loop_runs_the_same_training(tiny: DataRef) -> None:
    assert plain_training_loop(_spec(tiny, epochs=1)) > 0


def test_augmentation_moves_boxes_with_the_pixels() -> None:
    from kiln_training.detection import augment

    torch.manual_seed(0)
    image = torch.zeros(1, 40, 40)
    image[0, 10:20, 12:22] = 1.0
    boxes = torch.tensor([[12.0, 10.0, 22.0, 20.0]])
    for _ in range(10):
        out, moved, labels = augment(image, boxes, torch.tensor([0]), hflip=True)
        if len(moved) == 0:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in moved[0].tolist())
        inside = out[0, max(y1, 0) : y2, max(x1, 0) : x2]
        # The bright square is where its box says (jitter keeps it brighter than outside).
        assert inside.mean() > out[0].mean()
        assert labels.tolist() == [0]


def _png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size)).save(buffer, "PNG")
    return buffer.getvalue()


def test_plain_torch_nms_keeps_exactly_what_torchvision_keeps() -> None:
    import torchvision

    from kiln_training.detection import suppress

    generator = torch.Generator().manual_seed(5)
    corners = torch.rand(300, 2, generator=generator) * 60
    sizes = torch.rand(300, 2, generator=generator) * 25 + 1
    boxes = torch.cat([corners, corners + sizes], dim=1)
    scores = torch.rand(300, generator=generator)
    labels = torch.randint(0, 4, (300,), generator=generator)
    for threshold in (0.3, 0.5, 0.7):
        expected = torchvision.ops.batched_nms(boxes, scores, labels, threshold)
        assert torch.equal(suppress(boxes, scores, labels, threshold), expected)
    assert suppress(boxes[:0], scores[:0], labels[:0], 0.5).numel() == 0


def test_two_data_parallel_ranks_train_a_detector_and_resume_bit_identically(
    tiny: DataRef,
) -> None:
    spec = _spec(tiny, epochs=2)
    spec.world_size = 2
    spec.checkpoint_every_steps = 2
    straight = run_training(spec, ScriptedControl())
    control = ScriptedControl(pause_at_step=3)
    paused = run_training(spec, control)
    assert paused.status == "paused" and paused.step == 3
    resumed = run_training(spec, control)
    # 16 train images, 8 per rank, 2 per rank per step (batch 4 over 2 ranks): 4 per epoch.
    assert resumed.status == "succeeded" and resumed.step == 2 * 4
    _assert_identical(straight, resumed)
    assert {"map", "map50"} <= set(resumed.metrics)
    assert resumed.model is not None and resumed.model.torchscript
