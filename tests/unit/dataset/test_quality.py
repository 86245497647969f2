"""Quality report: duplicates, unreadable images, label balance and bounds, item by item."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kiln_core.manifest import (
    BoxLabel,
    ClassLabel,
    KeypointsLabel,
    Label,
    ManifestItem,
    MaskLabel,
    PolygonLabel,
    Rle,
)
from kiln_dataset.quality import (
    ImageSource,
    QualityChecker,
    build_quality_report,
    dhash,
    hamming,
    near_duplicate_pairs,
)


def scene(seed: int, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A smooth random picture: coarse noise blown up, so it has structure a hash can see."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def item(
    item_id: str, data: bytes, labels: list[Label] | None = None, **fields: Any
) -> ManifestItem:
    return ManifestItem(
        item_id=item_id,
        blob=hashlib.sha256(data).hexdigest(),
        media_type="image/png",
        size_bytes=len(data),
        labels=labels or [],
        **fields,
    )


def report_of(entries: list[tuple[ManifestItem, ImageSource]], **options: Any) -> Any:
    return build_quality_report(iter(entries), **options)


def test_resized_recompressed_copy_is_a_near_duplicate_and_other_image_is_not() -> None:
    original = encode(scene(1))
    copy = encode(scene(1).resize((100, 75)), "JPEG", quality=60)
    other = encode(scene(2))
    assert (
        hamming(dhash(Image.open(io.BytesIO(original))), dhash(Image.open(io.BytesIO(copy)))) <= 6
    )

    report = report_of(
        [(item("a", original), original), (item("b", copy), copy), (item("c", other), other)]
    )

    assert [g.item_ids for g in report.near_duplicates] == [["a", "b"]]
    assert report.near_duplicates[0].max_distance <= 6
    assert report.exact_duplicates == []


def test_identical_bytes_are_exact_duplicates_not_near_duplicates() -> None:
    data = encode(scene(3))
    calls: list[str] = []

    def opener(name: str) -> Callable[[], Image.Image]:
        def open_image() -> Image.Image:
            calls.append(name)
            return Image.open(io.BytesIO(data))

        return open_image

    report = report_of([(item(n, data), opener(n)) for n in ("x", "y", "z")])

    assert [(g.blob, g.item_ids) for g in report.exact_duplicates] == [
        (hashlib.sha256(data).hexdigest(), ["x", "y", "z"])
    ]
    assert report.near_duplicates == []
    assert report.counts.exact_duplicate_items == 2
    assert calls == ["x"]  # one decode per distinct blob


def test_near_duplicate_group_lists_one_item_per_blob() -> None:
    data, copy = encode(scene(4)), encode(scene(4), "JPEG", quality=80)
    report = report_of([(item("b", data), data), (item("a", data), data), (item("c", copy), copy)])
    assert [g.item_ids for g in report.near_duplicates] == [["a", "c"]]
    assert [g.item_ids for g in report.exact_duplicates] == [["a", "b"]]


def test_truncated_file_is_reported_unreadable_not_raised(tmp_path: Path) -> None:
    data = encode(scene(5), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    garbage = b"not an image at all"

    report = report_of([(item("cut", data), path), (item("junk", garbage), garbage)])

    assert sorted(u.item_id for u in report.unreadable) == ["cut", "junk"]
    assert all(u.reason for u in report.unreadable)
    assert report.counts.unreadable == 2 and report.counts.readable == 0
    assert report.image_sizes is None


def test_unreadable_reasons_are_stable_and_say_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"junk")
    report = report_of([(item("file", b"junk"), path), (item("empty", b""), b"")])
    reasons = {u.item_id: u.reason for u in report.unreadable}
    assert reasons == {
        "file": "not a recognised image format",
        "empty": "empty file (is the blob missing?)",
    }


def test_png_truncated_is_unreadable() -> None:
    data = encode(scene(6))[:-200]
    report = report_of([(item("cut", data), data)])
    assert [u.item_id for u in report.unreadable] == ["cut"]


def test_storage_errors_from_the_source_propagate() -> None:
    class StoreDown(Exception):
        pass

    def broken() -> Image.Image:
        raise StoreDown("connection refused")

    with pytest.raises(StoreDown):
        report_of([(item("a", b"x"), broken)])


def test_labels_outside_the_image_are_flagged() -> None:
    data = encode(scene(7, (100, 80)))
    labels: list[Label] = [
        BoxLabel(label="in", bbox=[10, 10, 20, 20]),
        BoxLabel(label="out", bbox=[90, 70, 30, 5]),
        PolygonLabel(label="p", polygons=[[0, 0, 50, 0, 50, 95]]),
        MaskLabel(label="m", rle=Rle(size=[10, 10], counts="")),
        KeypointsLabel(label="k", keypoints=[-5, 5, 2, 500, 500, 0]),
        BoxLabel(label="edge", bbox=[0, 0, 100.2, 80]),  # within the half-pixel tolerance
    ]
    report = report_of([(item("a", data, labels), data)])
    assert [(f.label_index, f.kind) for f in report.out_of_bounds] == [
        (1, "box"),
        (2, "polygon_point"),
        (3, "mask_size"),
        (4, "keypoint"),
    ]
    assert report.counts.out_of_bounds == 4


def test_unreadable_image_is_checked_against_manifest_size() -> None:
    labels: list[Label] = [BoxLabel(label="b", bbox=[50, 0, 60, 10])]
    report = report_of([(item("a", b"junk", labels, width=100, height=100), b"junk")])
    assert [f.kind for f in report.out_of_bounds] == ["box"]


def test_manifest_size_that_disagrees_with_the_image_is_reported() -> None:
    data = encode(scene(8, (64, 48)))
    report = report_of(
        [
            (item("a", data, width=48, height=64), data),
            (item("b", encode(scene(9)), width=128, height=96), encode(scene(9))),
        ]
    )
    assert [(m.item_id, m.manifest, m.image) for m in report.size_mismatches] == [
        ("a", (48, 64), (64, 48))
    ]


def test_label_distribution_and_imbalance() -> None:
    entries: list[tuple[ManifestItem, ImageSource]] = []
    names = ["cat"] * 22 + ["dog"] * 4 + ["bird"] * 2
    for i, name in enumerate(names):
        data = encode(scene(100 + i, (16, 16)))
        entries.append((item(f"i{i}", data, [ClassLabel(label=name)]), data))
    data = encode(scene(999, (16, 16)))
    entries.append((item("empty", data), data))

    report = report_of(entries, near_duplicate_threshold=0)

    assert report.label_distribution == {"bird": 2, "cat": 22, "dog": 4}
    assert report.imbalance_ratio == pytest.approx(11.0)
    assert report.imbalanced
    assert report.unlabelled_items == 1
    assert any("imbalanced" in line for line in report.summary)

    balanced = report_of(entries, imbalance_threshold=20)
    assert not balanced.imbalanced


def test_instances_and_items_per_label_differ_for_detection() -> None:
    data = encode(scene(10))
    boxes: list[Label] = [BoxLabel(label="car", bbox=[0, 0, 5, 5]) for _ in range(3)]
    report = report_of([(item("a", data, boxes), data)])
    assert report.label_distribution == {"car": 3}
    assert report.items_per_label == {"car": 1}
    assert report.imbalance_ratio == 1.0 and not report.imbalanced


def test_image_sizes_summary() -> None:
    small, large = encode(scene(11, (20, 10))), encode(scene(12, (60, 30)))
    report = report_of([(item("s", small), small), (item("l", large), large)])
    sizes = report.image_sizes
    assert sizes is not None
    assert (sizes.min_width, sizes.max_width, sizes.mean_width) == (20, 60, 40)
    assert (sizes.min_height, sizes.max_height, sizes.mean_height) == (10, 30, 20)


def test_clean_dataset_says_so() -> None:
    data = encode(scene(13))
    report = report_of([(item("a", data, [ClassLabel(label="x")]), data)])
    assert report.summary[-1] == "No problems found."


def test_each_entry_is_finished_before_the_next_is_requested(tmp_path: Path) -> None:
    # the lead's generator deletes each temp file when resumed; the checker must be done with it
    blobs = [encode(scene(20 + i)) for i in range(3)]

    def entries() -> Iterator[tuple[ManifestItem, ImageSource]]:
        for i, data in enumerate(blobs):
            path = tmp_path / f"{i}.png"
            path.write_bytes(data)
            yield item(str(i), data), path
            path.unlink()

    progress: list[int] = []
    report = build_quality_report(entries(), progress=progress.append)
    assert report.counts.readable == 3 and progress == [1, 2, 3]


def test_adding_the_same_item_twice_is_an_error() -> None:
    checker = QualityChecker()
    data = encode(scene(14))
    checker.add(item("a", data), data)
    with pytest.raises(ValueError, match="twice"):
        checker.add(item("a", data), data)


def test_lists_are_capped_but_counts_are_not() -> None:
    entries: list[tuple[ManifestItem, ImageSource]] = [
        (item(f"j{i}", f"junk{i}".encode()), f"junk{i}".encode()) for i in range(5)
    ]
    report = report_of(entries, max_listed=2)
    assert len(report.unreadable) == 2 and report.counts.unreadable == 5


def test_near_duplicate_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = [int(v) for v in rng.integers(0, 2**63, 40, dtype=np.int64)]
    hashes = []
    for value in base:
        hashes.append(value)
        for _ in range(2):
            flips = rng.choice(64, size=int(rng.integers(0, 10)), replace=False)
            hashes.append(value ^ sum(1 << int(b) for b in flips))
    for threshold in (0, 3, 6):
        expected = [
            (i, j, hamming(hashes[i], hashes[j]))
            for i in range(len(hashes))
            for j in range(i + 1, len(hashes))
            if hamming(hashes[i], hashes[j]) <= threshold
        ]
        assert near_duplicate_pairs(hashes, threshold) == expected


def test_report_is_json_serialisable() -> None:
    data = encode(scene(15))
    report = report_of([(item("a", data), data)])
    assert type(report).model_validate_json(report.model_dump_json()) == report
