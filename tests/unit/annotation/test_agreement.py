"""Agreement between annotators (kappa, IoU, matching) and consensus labels, on hand-checked cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from kiln_annotation.agreement import (
    Candidate,
    ShapeMatch,
    box_iou,
    cohens_kappa,
    consensus,
    fleiss_kappa,
    fleiss_kappa_from_counts,
    mask_iou,
    match_shapes,
    polygon_iou,
    shape_agreement,
    shape_iou,
)
from kiln_core.manifest import BoxLabel, ClassLabel, KeypointsLabel, MaskLabel, PolygonLabel, Rle

# Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories; kappa = 0.210.
FLEISS_EXAMPLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def rle(mask: np.ndarray) -> Rle:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return Rle(size=[int(s) for s in encoded["size"]], counts=encoded["counts"].decode())


def rect_mask(rows: slice, cols: slice, shape: tuple[int, int] = (20, 20)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[rows, cols] = 1
    return mask


def cat_box(x: float, y: float, w: float = 10, h: float = 10, name: str = "cat") -> BoxLabel:
    return BoxLabel(label=name, bbox=[x, y, w, h])


def square(x: float, y: float, size: float = 10) -> list[float]:
    return [x, y, x + size, y, x + size, y + size, x, y + size]


# --- Cohen's kappa -------------------------------------------------------------------------------


def test_cohens_kappa_of_the_fifty_applications_example_is_0_4() -> None:
    # Both yes 20, A yes / B no 5, A no / B yes 10, both no 15:
    # po = 35/50 = 0.7, pe = 0.5·0.6 + 0.5·0.4 = 0.5, kappa = 0.2 / 0.5 = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("a", "b", "kappa"),
    [
        # po = 3/4, pe = 1/2·1/4 + 1/2·3/4 = 1/2 → 0.5
        (["x", "x", "y", "y"], ["x", "y", "y", "y"], 0.5),
        # po = 0, pe = 1/2 → -1
        (["x", "y"], ["y", "x"], -1.0),
        # po = 3/4, pe = 1·3/4 → 0: agreement no better than chance
        (["x", "x", "x", "x"], ["x", "x", "x", "y"], 0.0),
        # one category throughout: chance agreement is certain, defined as perfect agreement
        (["x", "x", "x"], ["x", "x", "x"], 1.0),
    ],
)
def test_cohens_kappa_hand_computed(a: list[str], b: list[str], kappa: float) -> None:
    assert cohens_kappa(a, b) == pytest.approx(kappa)


def test_cohens_kappa_refuses_unpaired_or_no_ratings() -> None:
    with pytest.raises(ValueError):
        cohens_kappa(["x"], ["x", "y"])
    with pytest.raises(ValueError):
        cohens_kappa([], [])


@given(st.lists(st.sampled_from(["cat", "dog", "bird", "fish"]), min_size=1, max_size=60))
def test_identical_raters_have_kappa_one(ratings: list[str]) -> None:
    assert cohens_kappa(ratings, list(ratings)) == 1.0
    assert fleiss_kappa([[r, r, r] for r in ratings]) == 1.0


@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc")), min_size=1, max_size=40))
def test_cohens_kappa_lies_between_minus_one_and_one(pairs: list[tuple[str, str]]) -> None:
    kappa = cohens_kappa([a for a, _ in pairs], [b for _, b in pairs])
    assert -1.0 <= kappa <= 1.0


# --- Fleiss' kappa -------------------------------------------------------------------------------


def test_fleiss_kappa_of_the_fleiss_1971_example_is_0_210() -> None:
    # P̄ = 0.378, P̄e = 0.213, kappa = (0.378 - 0.213) / (1 - 0.213) = 0.210.
    assert fleiss_kappa_from_counts(FLEISS_EXAMPLE) == pytest.approx(0.20993, abs=5e-5)
    assert fleiss_kappa_from_counts(np.array(FLEISS_EXAMPLE)) == pytest.approx(0.20993, abs=5e-5)


def test_fleiss_kappa_from_ratings_equals_the_count_matrix_form() -> None:
    ratings = [
        [category for category, n in zip("ABCDE", row, strict=True) for _ in range(n)]
        for row in FLEISS_EXAMPLE
    ]
    assert fleiss_kappa(ratings) == fleiss_kappa_from_counts(FLEISS_EXAMPLE)


def test_fleiss_kappa_hand_computed() -> None:
    # Items [a, a] and [a, b]: P = 1 and 0, P̄ = 1/2; p_a = 3/4, p_b = 1/4, P̄e = 5/8;
    # kappa = (1/2 - 5/8) / (3/8) = -1/3.
    assert fleiss_kappa([["a", "a"], ["a", "b"]]) == pytest.approx(-1 / 3)


def test_fleiss_kappa_with_one_category_is_perfect_agreement() -> None:
    assert fleiss_kappa([["a", "a", "a"], ["a", "a", "a"]]) == 1.0


def test_fleiss_kappa_refuses_uneven_or_single_ratings() -> None:
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["a", "b"], ["a", "b", "a"]])
    with pytest.raises(ValueError, match="two ratings"):
        fleiss_kappa([["a"], ["b"]])
    with pytest.raises(ValueError):
        fleiss_kappa_from_counts([])
    with pytest.raises(ValueError):
        fleiss_kappa_from_counts([[2, -1], [1, 0]])


# --- IoU -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ([0, 0, 10, 10], [5, 0, 10, 10], 50 / 150),
        ([0, 0, 2, 2], [1, 1, 2, 2], 1 / 7),
        ([0, 0, 10, 10], [2, 2, 5, 5], 25 / 100),
        ([0, 0, 10, 10], [10, 0, 10, 10], 0.0),  # touching edges share no area
        ([0, 0, 10, 10], [30, 30, 5, 5], 0.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # no area at all
    ],
)
def test_box_iou_hand_computed(a: list[float], b: list[float], iou: float) -> None:
    assert box_iou(a, b) == pytest.approx(iou)


coordinate = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
size = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False)
boxes = st.tuples(coordinate, coordinate, size, size).map(list)


@given(boxes, boxes)
def test_box_iou_is_symmetric_and_between_zero_and_one(a: list[float], b: list[float]) -> None:
    assert box_iou(a, b) == box_iou(b, a)
    assert 0.0 <= box_iou(a, b) <= 1.0


@given(boxes)
def test_box_iou_with_itself_is_one(a: list[float]) -> None:
    assert box_iou(a, a) == 1.0


def test_mask_iou_hand_computed_with_either_counts_form() -> None:
    top, lower = rect_mask(slice(0, 10), slice(0, 10)), rect_mask(slice(5, 15), slice(0, 10))
    assert mask_iou(rle(top), rle(lower)) == pytest.approx(50 / 150)
    # The same lower mask as uncompressed runs: column-major, 5 off, 10 on, 5 off per column.
    runs = [5] + [10, 10] * 9 + [10, 5 + 200]
    assert sum(runs) == 400
    assert mask_iou(rle(top), {"size": [20, 20], "counts": runs}) == pytest.approx(50 / 150)


def test_mask_iou_refuses_different_sizes_and_broken_runs() -> None:
    with pytest.raises(ValueError, match="differ"):
        mask_iou(rle(np.ones((4, 4))), rle(np.ones((4, 5))))
    with pytest.raises(ValueError, match="cover"):
        mask_iou({"size": [4, 4], "counts": [3, 3]}, rle(np.ones((4, 4))))


@given(
    st.lists(st.booleans(), min_size=64, max_size=64),
    st.lists(st.booleans(), min_size=64, max_size=64),
)
@settings(max_examples=50)
def test_mask_iou_is_symmetric_and_between_zero_and_one(a: list[bool], b: list[bool]) -> None:
    rle_a, rle_b = rle(np.array(a).reshape(8, 8)), rle(np.array(b).reshape(8, 8))
    assert mask_iou(rle_a, rle_b) == mask_iou(rle_b, rle_a)
    assert 0.0 <= mask_iou(rle_a, rle_b) <= 1.0


def test_polygon_iou_of_overlapping_squares() -> None:
    assert polygon_iou([square(0, 0)], [square(5, 0)]) == pytest.approx(1 / 3)
    assert polygon_iou([square(0, 0)], [square(0, 0)]) == 1.0
    assert polygon_iou([square(0, 0)], [square(30, 30)]) == 0.0


def test_polygon_iou_is_rasterised_close_to_the_true_area_and_placement_free() -> None:
    triangle = [[0, 0, 20, 0, 0, 20]]  # half of the square: true IoU 0.5
    near = polygon_iou([square(0, 0, 20)], triangle)
    assert near == pytest.approx(0.5, abs=0.05)
    far = polygon_iou([square(1000, 700, 20)], [[1000, 700, 1020, 700, 1000, 720]])
    assert far == near


def test_polygon_with_two_rings_counts_both() -> None:
    # a covers two 10×10 squares, b one of them: IoU 100 / 200.
    assert polygon_iou([square(0, 0), square(20, 0)], [square(20, 0)]) == pytest.approx(0.5)


@given(boxes.filter(lambda b: b[2] > 1 and b[3] > 1), boxes.filter(lambda b: b[2] > 1 and b[3] > 1))
@settings(max_examples=50)
def test_polygon_iou_is_symmetric_and_between_zero_and_one(a: list[float], b: list[float]) -> None:
    ring_a = [square(a[0] / 100, a[1] / 100, a[2] / 100)]
    ring_b = [square(b[0] / 100, b[1] / 100, b[2] / 100)]
    assert polygon_iou(ring_a, ring_b) == polygon_iou(ring_b, ring_a)
    assert 0.0 <= polygon_iou(ring_a, ring_b) <= 1.0


def test_shape_iou_compares_boxes_polygons_and_masks_alike() -> None:
    box = cat_box(0, 0)
    poly = PolygonLabel(label="cat", polygons=[square(0, 0)])
    mask = MaskLabel(label="cat", rle=rle(rect_mask(slice(0, 10), slice(0, 10))))
    assert shape_iou(box, poly) == 1.0
    assert shape_iou(box, mask) == 1.0
    assert shape_iou(mask, poly) == 1.0
    assert shape_iou(cat_box(5, 0), mask) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        shape_iou(ClassLabel(label="cat"), box)


# --- matching and shape agreement ----------------------------------------------------------------


def test_match_shapes_pairs_greedily_by_highest_iou() -> None:
    # IoU(a1, b1) = 80/120 is the best pair; a0 then takes b0 (70/130) though a1 overlaps it too.
    a = [cat_box(0, 0), cat_box(6, 0)]
    b = [cat_box(3, 0), cat_box(8, 0)]
    assert match_shapes(a, b) == [
        ShapeMatch(1, 1, 80 / 120),
        ShapeMatch(0, 0, 70 / 130),
    ]


def test_match_shapes_needs_the_same_label_and_enough_overlap() -> None:
    a = [cat_box(0, 0), cat_box(20, 20), cat_box(0, 0, name="dog")]
    b = [cat_box(1, 0), cat_box(20, 20, name="dog"), cat_box(50, 50, 5, 5)]
    # cat a0–b0: 90/110; dog a2 lies far from dog b1; nothing else shares a name and overlaps.
    assert match_shapes(a, b) == [ShapeMatch(0, 0, 90 / 110)]
    assert match_shapes(a, b, iou_threshold=0.9) == []


def test_shape_agreement_counts_unmatched_shapes_as_zero() -> None:
    a = [cat_box(0, 0), cat_box(20, 20), cat_box(0, 0, name="dog")]
    b = [cat_box(1, 0), cat_box(20, 20, name="dog"), cat_box(50, 50, 5, 5)]
    # One pair (90/110) among 3 + 3 - 1 = 5 objects.
    assert shape_agreement(a, b) == pytest.approx((90 / 110) / 5)
    assert shape_agreement(a, a) == 1.0
    assert shape_agreement([], []) == 1.0
    assert shape_agreement(a, []) == 0.0


# --- consensus -----------------------------------------------------------------------------------


def classes(*names: str) -> list[Any]:
    return [ClassLabel(label=name) for name in names]


def test_single_label_majority_wins() -> None:
    result = consensus([classes("cat"), classes("cat"), classes("dog")], "classification")
    assert result.labels == [ClassLabel(label="cat")]
    assert result.agreed == [Candidate(ClassLabel(label="cat"), 2)]
    assert result.disputed == []


def test_single_label_tie_is_no_consensus_and_reported() -> None:
    result = consensus([classes("cat"), classes("dog")], "classification")
    assert result.labels == []
    assert result.disputed == [
        Candidate(ClassLabel(label="cat"), 1, "tie"),
        Candidate(ClassLabel(label="dog"), 1, "tie"),
    ]


def test_single_label_plurality_below_min_agreement_is_reported() -> None:
    votes = [classes("cat"), classes("cat"), classes("dog"), classes("bird")]
    result = consensus(votes, "classification")
    assert result.labels == []
    assert result.disputed == [Candidate(ClassLabel(label="cat"), 2, "too few votes")]
    assert consensus(votes, "classification", min_agreement=0.4).labels == classes("cat")


def test_single_label_annotator_without_a_class_votes_for_none() -> None:
    assert consensus([classes("cat"), [], classes("cat")], "classification").labels == classes(
        "cat"
    )
    assert consensus([classes("cat"), [], []], "classification").labels == []
    with pytest.raises(ValueError, match="single-label"):
        consensus([classes("cat", "dog")], "classification")


def test_multi_label_votes_on_each_class() -> None:
    votes = [classes("cat", "dog"), classes("cat"), classes("cat", "bird", "bird")]
    result = consensus(votes, "classification", multi_label=True)
    assert result.labels == classes("cat")
    assert result.disputed == [
        Candidate(ClassLabel(label="dog"), 1, "too few votes"),
        Candidate(ClassLabel(label="bird"), 1, "too few votes"),
    ]
    two = consensus([classes("cat", "dog"), classes("cat")], "classification", multi_label=True)
    assert two.labels == classes("cat")
    assert two.disputed == [Candidate(ClassLabel(label="dog"), 1, "tie")]


def test_box_consensus_averages_each_cluster() -> None:
    annotations = [
        [cat_box(0, 0), cat_box(50, 50, name="dog")],
        [cat_box(2, 0), cat_box(51, 50, name="dog")],
        [cat_box(1, 1), cat_box(80, 60)],
    ]
    result = consensus(annotations, "boxes")
    assert [(c.label.label, c.votes) for c in result.agreed] == [("cat", 3), ("dog", 2)]
    cat, dog = result.labels
    assert isinstance(cat, BoxLabel) and isinstance(dog, BoxLabel)
    assert cat.bbox == pytest.approx([1, 1 / 3, 10, 10])
    assert dog.bbox == pytest.approx([50.5, 50, 10, 10])
    assert result.disputed == [Candidate(cat_box(80, 60), 1, "too few votes")]


def test_box_clusters_need_every_pair_to_overlap() -> None:
    # 0–3 and 3–6 overlap by 70/130, but 0–6 only by 40/160: the third box stays apart.
    result = consensus([[cat_box(0, 0)], [cat_box(3, 0)], [cat_box(6, 0)]], "boxes")
    assert [c.votes for c in result.agreed] == [2]
    merged = result.labels[0]
    assert isinstance(merged, BoxLabel)
    assert merged.bbox == pytest.approx([1.5, 0, 10, 10])
    assert result.disputed == [Candidate(cat_box(6, 0), 1, "too few votes")]


def test_one_annotators_shapes_never_count_twice() -> None:
    result = consensus([[cat_box(0, 0), cat_box(1, 0)], [cat_box(0, 0)]], "boxes")
    assert result.agreed == [Candidate(cat_box(0, 0), 2)]
    assert result.disputed == [Candidate(cat_box(1, 0), 1, "tie")]


def test_consensus_shape_drops_a_machine_score() -> None:
    scored = BoxLabel(label="cat", bbox=[0, 0, 10, 10], score=0.9)
    result = consensus([[scored], [cat_box(0, 0)]], "boxes")
    assert result.labels == [cat_box(0, 0)]


def test_mask_consensus_keeps_majority_pixels() -> None:
    masks = [
        rect_mask(slice(0, 10), slice(0, 10)),
        rect_mask(slice(0, 10), slice(1, 11)),
        rect_mask(slice(1, 11), slice(0, 10)),
    ]
    annotations = [[MaskLabel(label="cat", rle=rle(m))] for m in masks]
    result = consensus(annotations, "masks")
    assert [c.votes for c in result.agreed] == [3]
    merged = result.labels[0]
    assert isinstance(merged, MaskLabel) and isinstance(merged.rle.counts, str)
    decoded = mask_utils.decode({"size": merged.rle.size, "counts": merged.rle.counts.encode()})
    expected = (np.sum(masks, axis=0) >= 2).astype(np.uint8)
    assert (decoded == expected).all()
    assert int(expected.sum()) == 99  # the first mask's square minus its corner pixel (0, 0)


def test_polygon_consensus_takes_the_medoid() -> None:
    middle = PolygonLabel(label="cat", polygons=[square(0, 0)])
    right = PolygonLabel(label="cat", polygons=[square(1, 0)])
    below = PolygonLabel(label="cat", polygons=[square(0, 1)])
    result = consensus([[right], [middle], [below]], "polygons")
    assert result.labels == [middle]


def test_consensus_refuses_labels_of_another_kind_and_keypoints() -> None:
    with pytest.raises(ValueError, match="'box' label"):
        consensus([[cat_box(0, 0)]], "polygons")
    keypoints = KeypointsLabel(label="cat", keypoints=[1, 1, 2])
    with pytest.raises(ValueError, match="keypoints"):
        consensus([[keypoints]], "keypoints")
    with pytest.raises(ValueError):
        consensus([], "boxes")
