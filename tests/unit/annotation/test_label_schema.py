"""Label schemas and validation of submitted annotations: every error names its exact field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pydantic import ValidationError

from kiln_annotation.label_schema import (
    AnnotationInvalid,
    LabelSchema,
    first_self_intersection,
    parse_rle_string,
    validate_annotation,
)
from kiln_core.errors import ValidationFailed
from kiln_core.manifest import BoxLabel, ClassLabel, PolygonLabel

W, H = 100, 80


def schema(kind: str, **extra: Any) -> LabelSchema:
    return LabelSchema.model_validate(
        {"kind": kind, "labels": [{"name": "cat"}, {"name": "dog", "color": "#ff8800"}], **extra}
    )


def errors_of(
    kind_schema: LabelSchema, labels: list[Any], width: int = W, height: int = H
) -> dict[str, str]:
    with pytest.raises(AnnotationInvalid) as caught:
        validate_annotation(kind_schema, labels, width, height)
    return {e["field"]: e["message"] for e in caught.value.problem()["errors"]}


def rle_of(mask: np.ndarray) -> dict[str, Any]:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in encoded["size"]], "counts": encoded["counts"].decode()}


def box(bbox: list[Any], name: str = "cat", **extra: Any) -> dict[str, Any]:
    return {"type": "box", "label": name, "bbox": bbox, **extra}


def polygon(*rings: list[Any], name: str = "cat") -> dict[str, Any]:
    return {"type": "polygon", "label": name, "polygons": list(rings)}


# --- the schema itself ---------------------------------------------------------------------------


def test_schema_refuses_repeated_label_names() -> None:
    with pytest.raises(ValidationError, match="unique"):
        LabelSchema.model_validate({"kind": "boxes", "labels": [{"name": "a"}, {"name": "a"}]})


def test_schema_needs_between_one_and_a_thousand_labels() -> None:
    with pytest.raises(ValidationError):
        LabelSchema.model_validate({"kind": "boxes", "labels": []})
    many = [{"name": f"l{i}"} for i in range(1001)]
    with pytest.raises(ValidationError):
        LabelSchema.model_validate({"kind": "boxes", "labels": many})
    assert len(LabelSchema.model_validate({"kind": "boxes", "labels": many[:1000]}).labels) == 1000


def test_schema_options_belong_to_their_kind() -> None:
    with pytest.raises(ValidationError, match="keypoint_names"):
        schema("keypoints")
    with pytest.raises(ValidationError, match="multi_label"):
        schema("boxes", multi_label=True)
    with pytest.raises(ValidationError, match="min_box_size"):
        schema("polygons", min_box_size=3)
    with pytest.raises(ValidationError):
        LabelSchema.model_validate({"kind": "boxes", "labels": [{"name": "a", "color": "red"}]})


def test_error_is_a_422_problem_naming_every_field() -> None:
    with pytest.raises(AnnotationInvalid) as caught:
        validate_annotation(schema("boxes"), [box([0, 0, 10, 10]), box([0, 0, -1, 10])], W, H)
    error = caught.value
    assert isinstance(error, ValidationFailed)
    problem = error.problem()
    assert problem["status"] == 422
    assert problem["type"].endswith("/annotation-invalid")
    assert problem["errors"] == [
        {"field": "labels[1].bbox[2]", "message": "box width must not be negative, got -1.0"}
    ]
    assert problem["detail"].startswith("labels[1].bbox[2]: ")


# --- rules for every kind ------------------------------------------------------------------------


def test_label_type_must_match_the_schema_kind() -> None:
    errors = errors_of(schema("boxes"), [box([1, 1, 5, 5]), polygon([1, 1, 5, 1, 5, 5])])
    assert list(errors) == ["labels[1].type"]


def test_unknown_label_name_and_unknown_type_are_named() -> None:
    errors = errors_of(
        schema("boxes"),
        [box([1, 1, 5, 5], name="horse"), {"type": "circle", "label": "cat"}, {"label": "cat"}],
    )
    assert list(errors) == ["labels[0].label", "labels[1].type", "labels[2].type"]
    assert "'horse'" in errors["labels[0].label"]


def test_malformed_fields_are_named_by_their_path() -> None:
    errors = errors_of(
        schema("boxes"), [box([1, 1, "wide", 5]), box([1, 1, 5, 5], colour="red"), "box"]
    )
    assert list(errors) == ["labels[0].bbox[2]", "labels[1].colour", "labels[2]"]


def test_score_must_be_a_probability() -> None:
    errors = errors_of(
        schema("boxes"),
        [box([1, 1, 5, 5], score=1.5), box([1, 1, 5, 5], score=0.5), box([1, 1, 5, 5], score=-0.1)],
    )
    assert list(errors) == ["labels[0].score", "labels[2].score"]


def test_score_of_an_already_built_label_is_checked_too() -> None:
    label = BoxLabel.model_construct(
        label="cat", bbox=[1, 1, 5, 5], score=float("nan"), attributes={}
    )
    assert list(errors_of(schema("boxes"), [label])) == ["labels[0].score"]


def test_attributes_must_be_defined_with_an_allowed_value() -> None:
    boxes = schema("boxes", attributes={"occluded": [True, False], "note": []})
    ok = box([1, 1, 5, 5], attributes={"occluded": True, "note": "anything"})
    errors = errors_of(
        boxes,
        [
            ok,
            box([1, 1, 5, 5], attributes={"occluded": "maybe"}),
            box([1, 1, 5, 5], attributes={"truncated level": 1}),
        ],
    )
    assert list(errors) == [
        "labels[1].attributes.occluded",
        'labels[2].attributes["truncated level"]',
    ]


def test_every_error_is_reported_not_just_the_first() -> None:
    labels = [box([1, 1, 5, 5]), box([-5, 1, 5, 5]), box([1, 1, 5, 5], name="x"), box([1, 1, 0, 5])]
    assert list(errors_of(schema("boxes"), labels)) == [
        "labels[1].bbox[0]",
        "labels[2].label",
        "labels[3].bbox[2]",
    ]


def test_errors_are_capped_at_fifty() -> None:
    with pytest.raises(AnnotationInvalid) as caught:
        validate_annotation(schema("boxes"), [box([1, 1, 5, 5], name="x")] * 80, W, H)
    problem = caught.value.problem()
    assert len(problem["errors"]) == 50
    assert problem["truncated"] is True


def test_validation_returns_parsed_labels_unchanged() -> None:
    built = BoxLabel(label="dog", bbox=[0, 0, 100, 80])
    parsed = validate_annotation(schema("boxes"), [box([10.5, 2, 30, 40]), built], W, H)
    assert parsed[0] == BoxLabel(label="cat", bbox=[10.5, 2, 30, 40])
    assert parsed[1] is built


def test_empty_annotation_is_valid_for_shapes() -> None:
    assert validate_annotation(schema("boxes"), [], W, H) == []


# --- classification ------------------------------------------------------------------------------


def test_single_label_classification_needs_exactly_one_class() -> None:
    single = schema("classification")
    cat = {"type": "class", "label": "cat"}
    assert validate_annotation(single, [cat], W, H) == [ClassLabel(label="cat")]
    assert list(errors_of(single, [])) == ["labels"]
    errors = errors_of(single, [cat, {"type": "class", "label": "dog"}, cat])
    assert list(errors) == ["labels[1]", "labels[2]"]


def test_multi_label_classification_refuses_repeats() -> None:
    multi = schema("classification", multi_label=True)
    cat, dog = {"type": "class", "label": "cat"}, {"type": "class", "label": "dog"}
    assert len(validate_annotation(multi, [cat, dog], W, H)) == 2
    assert validate_annotation(multi, [], W, H) == []
    errors = errors_of(multi, [cat, dog, cat])
    assert list(errors) == ["labels[2].label"]
    assert "labels[0]" in errors["labels[2].label"]


# --- boxes ---------------------------------------------------------------------------------------


def test_box_touching_the_image_edges_within_half_a_pixel_is_valid() -> None:
    labels = [box([0, 0, 100, 80]), box([-0.5, -0.5, 100.5, 80.5]), box([99, 79, 1.5, 1.5])]
    assert len(validate_annotation(schema("boxes"), labels, W, H)) == 3


@pytest.mark.parametrize(
    ("bbox", "field"),
    [
        ([-1, 0, 10, 10], "labels[0].bbox[0]"),
        ([0, -0.6, 10, 10], "labels[0].bbox[1]"),
        ([95, 0, 6, 10], "labels[0].bbox[2]"),
        ([0, 75, 10, 6], "labels[0].bbox[3]"),
        ([101, 0, 1, 1], "labels[0].bbox[0]"),
        ([0, 0, 0, 10], "labels[0].bbox[2]"),
        ([0, 0, 10, 0], "labels[0].bbox[3]"),
        ([0, 0, 10, -2], "labels[0].bbox[3]"),
        ([0, float("nan"), 10, 10], "labels[0].bbox[1]"),
        ([0, 0, float("inf"), 10], "labels[0].bbox[2]"),
    ],
)
def test_bad_box_names_the_wrong_coordinate(bbox: list[float], field: str) -> None:
    assert list(errors_of(schema("boxes"), [box(bbox)])) == [field]


def test_box_with_wrong_length_is_refused() -> None:
    assert list(errors_of(schema("boxes"), [box([0, 0, 10])])) == ["labels[0].bbox"]


def test_box_below_the_minimum_size_names_the_short_side() -> None:
    boxes = schema("boxes", min_box_size=4)
    assert validate_annotation(boxes, [box([0, 0, 4, 4])], W, H)
    assert list(errors_of(boxes, [box([0, 0, 10, 3]), box([0, 0, 2, 10])])) == [
        "labels[0].bbox[3]",
        "labels[1].bbox[2]",
    ]


# --- polygons ------------------------------------------------------------------------------------


SQUARE = [10, 10, 20, 10, 20, 20, 10, 20]


def test_valid_polygons_pass_including_a_repeated_closing_point() -> None:
    labels = [polygon(SQUARE), polygon(SQUARE + [10, 10], [50, 50, 60, 50, 55, 60], name="dog")]
    assert len(validate_annotation(schema("polygons"), labels, W, H)) == 2


@pytest.mark.parametrize(
    ("ring", "field"),
    [
        ([10, 10, 20, 10], "labels[0].polygons[1]"),
        ([10, 10, 20, 10, 20], "labels[0].polygons[1]"),
        ([10, 10, 20, 10, 20, float("nan")], "labels[0].polygons[1][5]"),
        ([10, 10, 20, 10, 20, 80.6], "labels[0].polygons[1][5]"),
        ([10, 10, 100.7, 10, 20, 20], "labels[0].polygons[1][2]"),
        ([10, 10, 20, 10, 30, 10], "labels[0].polygons[1]"),
        ([10, 10, 20, 20, 20, 10, 10, 20], "labels[0].polygons[1]"),
    ],
    ids=["two-points", "odd", "nan", "below", "right", "no-area", "bow-tie"],
)
def test_bad_ring_names_the_ring_or_coordinate(ring: list[float], field: str) -> None:
    assert list(errors_of(schema("polygons"), [polygon(SQUARE, ring)])) == [field]


def test_self_intersection_message_names_the_edges() -> None:
    errors = errors_of(schema("polygons"), [polygon([10, 10, 20, 20, 20, 10, 10, 20])])
    assert "edges 0 and 2" in errors["labels[0].polygons[0]"]


def test_polygon_label_already_built_is_checked_for_ring_shape() -> None:
    label = PolygonLabel.model_construct(label="cat", polygons=[SQUARE, [1, 2, 3]], attributes={})
    assert list(errors_of(schema("polygons"), [label])) == ["labels[0].polygons[1]"]


@pytest.mark.parametrize(
    "points",
    [
        [(0, 0), (4, 0), (4, 4), (0, 4)],
        [(0, 0), (4, 0), (2, 2), (4, 4), (0, 4)],  # concave
        [(0, 0), (10, 0), (10, 10), (6, 10), (6, 4), (4, 4), (4, 10), (0, 10)],  # U shape
    ],
)
def test_simple_rings_do_not_intersect(points: list[tuple[float, float]]) -> None:
    assert first_self_intersection(points) is None


@pytest.mark.parametrize(
    ("points", "edges"),
    [
        ([(0, 0), (4, 4), (4, 0), (0, 4)], (0, 2)),  # bow tie
        ([(0, 0), (4, 0), (4, 4), (2, 0), (0, 4)], (0, 2)),  # vertex touching an edge
        ([(0, 0), (4, 0), (2, 0), (2, 4)], (0, 1)),  # folds back along itself
        ([(0, 0), (6, 0), (6, 6), (2, 6), (2, -2), (0, -2)], (0, 3)),  # crossing far apart
    ],
)
def test_crossing_rings_report_their_first_edges(
    points: list[tuple[float, float]], edges: tuple[int, int]
) -> None:
    assert first_self_intersection(points) == edges


def test_thousand_point_ring_is_checked_quickly() -> None:
    angles = np.linspace(0, 2 * np.pi, 1000, endpoint=False)
    ring = np.stack([50 + 30 * np.cos(angles), 40 + 30 * np.sin(angles)], axis=1).ravel().tolist()
    assert validate_annotation(schema("polygons"), [polygon(ring)], W, H)


# --- masks ---------------------------------------------------------------------------------------


def blob() -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[10:30, 20:50] = 1
    return mask


def test_masks_with_string_or_list_counts_are_valid() -> None:
    rle = rle_of(blob())
    runs = parse_rle_string(rle["counts"])
    labels = [
        {"type": "mask", "label": "cat", "rle": rle},
        {"type": "mask", "label": "dog", "rle": {"size": [H, W], "counts": runs}},
    ]
    assert len(validate_annotation(schema("masks"), labels, W, H)) == 2


def test_mask_of_another_size_names_the_size() -> None:
    rle = rle_of(np.ones((W, H), dtype=np.uint8))
    errors = errors_of(schema("masks"), [{"type": "mask", "label": "cat", "rle": rle}])
    assert list(errors) == ["labels[0].rle.size"]


def test_empty_mask_is_refused() -> None:
    rle = rle_of(np.zeros((H, W), dtype=np.uint8))
    errors = errors_of(schema("masks"), [{"type": "mask", "label": "cat", "rle": rle}])
    assert errors == {"labels[0].rle.counts": "the mask is empty"}


@pytest.mark.parametrize(
    ("counts", "field"),
    [
        ([10, 20], "labels[0].rle.counts"),  # too few pixels
        ([100, -20, 7920], "labels[0].rle.counts[1]"),
        ([100, "x", 7920], "labels[0].rle.counts[1]"),
        ("0", "labels[0].rle.counts"),  # decodes to a single zero-length run
        ("R~~~", "labels[0].rle.counts"),  # invalid character
        ("Q", "labels[0].rle.counts"),  # ends in the middle of a run
        (5, "labels[0].rle.counts"),
    ],
)
def test_undecodable_counts_are_refused(counts: Any, field: str) -> None:
    label = {"type": "mask", "label": "cat", "rle": {"size": [H, W], "counts": counts}}
    assert list(errors_of(schema("masks"), [label])) == [field]


def test_string_counts_that_overrun_the_mask_are_refused_without_decoding() -> None:
    # A valid RLE of a bigger mask passed off with a smaller size: pycocotools would overrun.
    rle = rle_of(np.ones((200, 200), dtype=np.uint8))
    label = {"type": "mask", "label": "cat", "rle": {"size": [H, W], "counts": rle["counts"]}}
    errors = errors_of(schema("masks"), [label])
    assert "40000 pixels" in errors["labels[0].rle.counts"]


def test_rle_string_parser_matches_pycocotools() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(1, 30, size=2))
        mask = (rng.random((height, width)) < rng.random()).astype(np.uint8)
        rle = rle_of(mask)
        runs = parse_rle_string(rle["counts"])
        assert sum(runs) == height * width
        assert sum(runs[1::2]) == int(mask.sum())
        rebuilt = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
        assert rebuilt["counts"].decode() == rle["counts"]


# --- keypoints -----------------------------------------------------------------------------------


def keypoints_schema() -> LabelSchema:
    return schema("keypoints", keypoint_names=["nose", "left_eye", "right_eye"])


def test_keypoints_with_unlabelled_points_anywhere_are_valid() -> None:
    label = {"type": "keypoints", "label": "cat", "keypoints": [10, 10, 2, 0, 0, 0, 100, 80, 1]}
    assert validate_annotation(keypoints_schema(), [label], W, H)


@pytest.mark.parametrize(
    ("keypoints", "fields"),
    [
        ([10, 10, 2, 20, 20, 2], ["labels[0].keypoints"]),
        ([10, 10, 3, 20, 20, 2, 30, 30, -1], ["labels[0].keypoints[2]", "labels[0].keypoints[8]"]),
        ([10, 10, 2, 120, 20, 2, 30, 90, 1], ["labels[0].keypoints[3]", "labels[0].keypoints[7]"]),
        (
            [10, 10, 2, 20, 20, 1.5, 30, float("inf"), 0],
            ["labels[0].keypoints[5]", "labels[0].keypoints[7]"],
        ),
    ],
)
def test_bad_keypoints_name_the_wrong_number(keypoints: list[float], fields: list[str]) -> None:
    label = {"type": "keypoints", "label": "cat", "keypoints": keypoints}
    assert list(errors_of(keypoints_schema(), [label])) == fields


def test_derived_bbox_of_a_shape_must_lie_inside_the_image() -> None:
    label = {
        "type": "keypoints",
        "label": "cat",
        "keypoints": [10, 10, 2] * 3,
        "bbox": [0, 0, 200, 10],
    }
    assert list(errors_of(keypoints_schema(), [label])) == ["labels[0].bbox[2]"]
