"""Augmentation: labels move with the pixels, and the same seed gives the same output."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils
from pydantic import ValidationError

from kiln_core.manifest import (
    BoxLabel,
    ClassLabel,
    KeypointsLabel,
    Label,
    MaskLabel,
    PolygonLabel,
    Rle,
)
from kiln_dataset.augment import STRATEGIES, AnyLabel, Recipe, apply_recipe, item_seed

W, H = 40, 30


def noise_image(width: int = W, height: int = H, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def mask_label(mask: np.ndarray) -> MaskLabel:
    coco = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return MaskLabel(
        label="blob",
        rle=Rle(size=[int(v) for v in coco["size"]], counts=coco["counts"].decode()),
    )


def decoded(label: MaskLabel) -> np.ndarray:
    return mask_utils.decode({"size": label.rle.size, "counts": str(label.rle.counts).encode()})


def recipe(*steps: dict[str, Any], copies: int = 1) -> Recipe:
    return Recipe.model_validate({"steps": list(steps), "copies_per_item": copies})


def sample_labels() -> list[Label]:
    mask = np.zeros((H, W), np.uint8)
    mask[5:12, 3:20] = 1
    return [
        ClassLabel(label="cat"),
        BoxLabel(label="cat", bbox=[2, 3, 10, 5]),
        PolygonLabel(label="cat", polygons=[[1, 1, 10, 1, 10, 10]]),
        mask_label(mask),
        KeypointsLabel(label="cat", keypoints=[5, 5, 2, 20, 10, 1]),
    ]


EVERYTHING = recipe(
    *({"strategy": name, "probability": 0.7} for name in STRATEGIES if name != "resize"),
    {"strategy": "resize", "params": {"width": 32}},
)


def assert_inside(labels: list[AnyLabel], size: tuple[int, int]) -> None:
    width, height = size
    eps = 1e-6
    for label in labels:
        if isinstance(label, BoxLabel):
            x, y, w, h = label.bbox
            assert w >= 0 and h >= 0
            assert -eps <= x and x + w <= width + eps
            assert -eps <= y and y + h <= height + eps
        elif isinstance(label, PolygonLabel):
            for ring in label.polygons:
                assert len(ring) >= 6 and len(ring) % 2 == 0
                assert all(-eps <= v <= width + eps for v in ring[0::2])
                assert all(-eps <= v <= height + eps for v in ring[1::2])
        elif isinstance(label, MaskLabel):
            assert label.rle.size == [height, width]
        elif isinstance(label, KeypointsLabel):
            for x, y, v in zip(*[iter(label.keypoints)] * 3, strict=True):
                if v > 0:
                    assert -eps <= x <= width + eps and -eps <= y <= height + eps


def test_same_seed_gives_identical_pixels_and_labels() -> None:
    image = noise_image()
    first = apply_recipe(image, sample_labels(), EVERYTHING, seed=42)
    second = apply_recipe(image, sample_labels(), EVERYTHING, seed=42)
    assert first[0].tobytes() == second[0].tobytes()
    assert first[1] == second[1]


def test_different_seeds_give_different_images() -> None:
    image = noise_image()
    outputs = {apply_recipe(image, [], EVERYTHING, seed=s)[0].tobytes() for s in range(5)}
    assert len(outputs) == 5


def test_input_image_is_not_modified() -> None:
    image = noise_image()
    before = image.tobytes()
    apply_recipe(image, sample_labels(), EVERYTHING, seed=1)
    assert image.tobytes() == before


def test_item_seed_is_stable_and_distinguishes_items_and_copies() -> None:
    assert item_seed(7, "a.jpg", 0) == item_seed(7, "a.jpg", 0)
    seeds = {item_seed(b, i, c) for b in (0, 1) for i in ("a", "b") for c in (0, 1)}
    assert len(seeds) == 8
    assert all(0 <= s < 2**64 for s in seeds)


def test_horizontal_flip_mirrors_a_box() -> None:
    _, labels = apply_recipe(
        noise_image(),
        [BoxLabel(label="a", bbox=[2, 3, 10, 5])],
        recipe({"strategy": "horizontal_flip"}),
        0,
    )
    assert isinstance(labels[0], BoxLabel)
    assert labels[0].bbox == [W - 2 - 10, 3, 10, 5]


def test_vertical_flip_mirrors_a_box() -> None:
    _, labels = apply_recipe(
        noise_image(),
        [BoxLabel(label="a", bbox=[2, 3, 10, 5])],
        recipe({"strategy": "vertical_flip"}),
        0,
    )
    assert isinstance(labels[0], BoxLabel)
    assert labels[0].bbox == [2, H - 3 - 5, 10, 5]


def test_double_horizontal_flip_is_identity() -> None:
    image, labels = noise_image(), sample_labels()
    flip_twice = recipe({"strategy": "horizontal_flip"}, {"strategy": "horizontal_flip"})
    out_image, out_labels = apply_recipe(image, labels, flip_twice, 3)
    assert out_image.tobytes() == image.tobytes()
    assert out_labels == labels


def test_horizontal_flip_moves_the_pixels_under_the_box() -> None:
    image = noise_image()
    box = BoxLabel(label="a", bbox=[2, 3, 10, 5])
    out_image, (out_box,) = apply_recipe(image, [box], recipe({"strategy": "horizontal_flip"}), 0)
    assert isinstance(out_box, BoxLabel)

    def crop(im: Image.Image, b: list[float]) -> np.ndarray:
        x, y, w, h = (int(v) for v in b)
        return np.asarray(im)[y : y + h, x : x + w]

    assert np.array_equal(crop(out_image, out_box.bbox), crop(image, box.bbox)[:, ::-1])


@pytest.mark.parametrize("expand", [True, False])
def test_rotate_90_of_a_mask_equals_numpy_rot90(expand: bool) -> None:
    side = 24 if not expand else None
    image = noise_image(W, side or H)
    mask = np.zeros((side or H, W), np.uint8)
    mask[5:12, 3:20] = 1
    mask[15:18, 30:33] = 1
    rotate = recipe({"strategy": "rotate", "params": {"degrees": [90, 90], "expand": expand}})
    out_image, labels = apply_recipe(image, [mask_label(mask)], rotate, 0)
    assert isinstance(labels[0], MaskLabel)
    if expand:
        assert np.array_equal(decoded(labels[0]), np.rot90(mask))
        assert np.array_equal(np.asarray(out_image), np.rot90(np.asarray(image)))
    else:
        assert out_image.size == image.size


def test_rotate_90_moves_a_box_to_the_rotated_corners() -> None:
    rotate = recipe({"strategy": "rotate", "params": {"degrees": [90, 90], "expand": True}})
    image, labels = apply_recipe(
        noise_image(), [BoxLabel(label="a", bbox=[2, 3, 10, 5])], rotate, 0
    )
    assert image.size == (H, W)
    assert isinstance(labels[0], BoxLabel)
    # counter-clockwise: (x, y) -> (y, W - x)
    assert labels[0].bbox == [3, W - 12, 5, 10]


def test_small_rotation_grows_the_box_to_hold_the_rotated_corners() -> None:
    box = BoxLabel(label="a", bbox=[15, 10, 10, 10])
    rotate = recipe({"strategy": "rotate", "params": {"degrees": [30, 30]}})
    _, labels = apply_recipe(noise_image(), [box], rotate, 0)
    assert isinstance(labels[0], BoxLabel)
    x, y, w, h = labels[0].bbox
    side = 10 * (np.cos(np.radians(30)) + np.sin(np.radians(30)))
    assert w == pytest.approx(side) and h == pytest.approx(side)
    assert x + w / 2 == pytest.approx(20) and y + h / 2 == pytest.approx(15)


def test_random_crop_keeps_boxes_inside_and_drops_mostly_hidden_ones() -> None:
    boxes: list[Label] = [
        BoxLabel(label=str(i), bbox=[x, y, 6, 6])
        for i, (x, y) in enumerate([(0, 0), (17, 12), (34, 24)])
    ]
    crop = recipe(
        {"strategy": "random_crop", "params": {"fraction": [0.5, 0.7], "min_visibility": 0.5}}
    )
    for seed in range(30):
        image, labels = apply_recipe(noise_image(), boxes, crop, seed)
        assert image.size[0] <= 0.7 * W + 1 and image.size[1] <= 0.7 * H + 1
        assert_inside(labels, image.size)
        for label in labels:
            assert isinstance(label, BoxLabel)
            assert label.bbox[2] * label.bbox[3] >= 0.5 * 36 - 1e-9


def test_crop_clips_a_polygon_to_the_crop() -> None:
    polygon = PolygonLabel(
        label="p", polygons=[[0, 0, W, 0, W, H, 0, H]], bbox=[0, 0, W, H], area=W * H
    )
    crop = recipe({"strategy": "random_crop", "params": {"fraction": [0.5, 0.5]}})
    image, (label,) = apply_recipe(noise_image(), [polygon], crop, 9)
    assert isinstance(label, PolygonLabel)
    assert label.area == pytest.approx(image.size[0] * image.size[1])
    assert label.bbox == pytest.approx([0, 0, *image.size])


def test_scale_moves_a_mask_with_the_image() -> None:
    mask = np.zeros((H, W), np.uint8)
    mask[10:20, 10:30] = 1
    image, (label,) = apply_recipe(
        noise_image(),
        [mask_label(mask)],
        recipe({"strategy": "resize", "params": {"width": 80}}),
        0,
    )
    assert image.size == (80, 60)
    assert isinstance(label, MaskLabel)
    assert decoded(label).sum() == 4 * mask.sum()


def test_mask_with_uncompressed_counts_and_other_size_is_fitted_to_the_image() -> None:
    small = np.zeros((15, 20), np.uint8)
    small[0:5, 0:10] = 1
    counts: list[int] = []
    flat, current, run = small.flatten(order="F"), 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    label = MaskLabel(label="m", rle=Rle(size=[15, 20], counts=counts))
    _, (out,) = apply_recipe(noise_image(), [label], recipe(), 0)
    assert isinstance(out, MaskLabel)
    assert out.rle.size == [H, W]
    assert decoded(out).sum() == 4 * small.sum()


def test_class_labels_pass_through_every_strategy() -> None:
    labels: list[Label] = [ClassLabel(label="cat", score=0.5, attributes={"k": 1})]
    _, out = apply_recipe(noise_image(), labels, EVERYTHING, 11)
    assert out == labels


def test_every_output_label_stays_within_the_output_image() -> None:
    for seed in range(40):
        image, labels = apply_recipe(noise_image(), sample_labels(), EVERYTHING, seed)
        assert_inside(labels, image.size)


def test_labels_outside_the_input_are_clipped_even_without_geometric_steps() -> None:
    outside: list[Label] = [
        BoxLabel(label="a", bbox=[30, 20, 20, 20]),
        BoxLabel(label="b", bbox=[100, 100, 5, 5]),
    ]
    _, labels = apply_recipe(noise_image(), outside, recipe({"strategy": "grayscale"}), 0)
    assert [label.bbox for label in labels if isinstance(label, BoxLabel)] == [[30, 20, 10, 10]]


def test_photometric_steps_keep_size_and_mode() -> None:
    for name in (
        "colour_jitter",
        "gaussian_noise",
        "gaussian_blur",
        "grayscale",
        "cutout",
        "jpeg_quality",
        "posterize",
    ):
        for mode in ("RGB", "L"):
            image = noise_image().convert(mode)
            out, _ = apply_recipe(image, [], recipe({"strategy": name}), 0)
            assert (out.size, out.mode) == (image.size, mode), name


def test_other_modes_are_converted_to_rgb() -> None:
    out, _ = apply_recipe(
        noise_image().convert("RGBA"), [], recipe({"strategy": "horizontal_flip"}), 0
    )
    assert out.mode == "RGB"


def test_probability_zero_never_applies_and_one_always_does() -> None:
    image = noise_image()
    never = recipe({"strategy": "horizontal_flip", "probability": 0.0})
    always = recipe({"strategy": "horizontal_flip", "probability": 1.0})
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    for seed in range(10):
        assert apply_recipe(image, [], never, seed)[0].tobytes() == image.tobytes()
        assert apply_recipe(image, [], always, seed)[0].tobytes() == flipped


def test_unknown_strategy_is_rejected_naming_the_step() -> None:
    with pytest.raises(ValidationError) as info:
        recipe({"strategy": "horizontal_flip"}, {"strategy": "melt"})
    (error,) = info.value.errors()
    assert error["loc"] == ("steps", 1)
    assert "melt" in error["msg"] and "strategy" in error["msg"]


@pytest.mark.parametrize(
    ("step", "loc_tail"),
    [
        ({"strategy": "rotate", "params": {"degrees": [20, -20]}}, ("params", "degrees")),
        ({"strategy": "gaussian_noise", "params": {"sigma": [-1, 2]}}, ("params", "sigma", 0)),
        ({"strategy": "random_crop", "params": {"fraction": [0, 1]}}, ("params", "fraction", 0)),
        ({"strategy": "cutout", "params": {"holes": [1, 2], "colour": 3}}, ("params", "colour")),
        ({"strategy": "resize", "params": {}}, ("params",)),
        ({"strategy": "grayscale", "probability": 1.5}, ("probability",)),
    ],
)
def test_bad_params_are_rejected_naming_step_and_field(
    step: dict[str, Any], loc_tail: tuple[Any, ...]
) -> None:
    with pytest.raises(ValidationError) as info:
        recipe({"strategy": "horizontal_flip"}, step)
    (error,) = info.value.errors()
    assert error["loc"][:2] == ("steps", 1)
    assert error["loc"][-len(loc_tail) :] == loc_tail


def test_copies_per_item_must_be_positive() -> None:
    with pytest.raises(ValidationError) as info:
        recipe(copies=0)
    assert info.value.errors()[0]["loc"] == ("copies_per_item",)


def test_recipe_round_trips_through_json() -> None:
    assert Recipe.model_validate_json(EVERYTHING.model_dump_json()) == EVERYTHING


# --- property ---------------------------------------------------------------------------------

coordinate = st.floats(min_value=0, max_value=1, allow_nan=False)


@st.composite
def boxes(draw: st.DrawFn) -> BoxLabel:
    x, y = draw(coordinate) * W, draw(coordinate) * H
    w, h = draw(coordinate) * (W - x), draw(coordinate) * (H - y)
    return BoxLabel(label="b", bbox=[x, y, w, h])


@st.composite
def polygons(draw: st.DrawFn) -> PolygonLabel:
    n = draw(st.integers(3, 6))
    ring = [v for _ in range(n) for v in (draw(coordinate) * W, draw(coordinate) * H)]
    return PolygonLabel(label="p", polygons=[ring])


steps = st.one_of(
    st.just({"strategy": "horizontal_flip"}),
    st.just({"strategy": "vertical_flip"}),
    st.builds(
        lambda a, b, expand: {
            "strategy": "rotate",
            "params": {"degrees": sorted([a, b]), "expand": expand},
        },
        st.floats(-180, 180),
        st.floats(-180, 180),
        st.booleans(),
    ),
    st.builds(
        lambda a, b, v: {
            "strategy": "random_crop",
            "params": {"fraction": sorted([a, b]), "min_visibility": v},
        },
        st.floats(0.05, 1),
        st.floats(0.05, 1),
        st.floats(0, 1),
    ),
    st.builds(
        lambda a, b: {"strategy": "scale", "params": {"factor": sorted([a, b])}},
        st.floats(0.1, 2),
        st.floats(0.1, 2),
    ),
    st.just({"strategy": "cutout"}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=st.lists(st.one_of(boxes(), polygons()), max_size=6),
    chosen=st.lists(steps, min_size=1, max_size=4),
    seed=st.integers(0, 2**63),
)
def test_outputs_stay_inside_the_image_for_any_recipe(
    labels: list[Label], chosen: list[dict[str, Any]], seed: int
) -> None:
    image, out = apply_recipe(noise_image(), labels, recipe(*chosen), seed)
    assert_inside(out, image.size)
