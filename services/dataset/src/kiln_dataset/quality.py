"""Quality report of a dataset version: unreadable images, duplicates, label balance, bounds.

Images are streamed: :class:`QualityChecker` takes one item at a time with a way to open its
image, keeps only a few numbers per distinct blob (size, a 64-bit hash) and never holds two
images at once. :func:`build_quality_report` feeds it from an iterable, so a caller can write a
generator that fetches each blob to a temp file, yields it and deletes it once resumed::

    def entries():
        for item in items:
            with fetch_blob_to_tempfile(item.blob) as path:
                yield item, path

    report = build_quality_report(entries())

An image is opened once per distinct blob; further items with the same blob reuse the result
without calling their source. Near duplicates use a difference hash (dHash): two images are near
duplicates when their hashes differ in at most ``near_duplicate_threshold`` of 64 bits. Groups are
connected components (A~B and B~C put A, B, C in one group), found by splitting the hash into
``threshold + 1`` bands: two hashes that close agree exactly on at least one band (pigeonhole), so
only hashes sharing a band are compared.
"""

from __future__ import annotations

import io
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from kiln_core.manifest import BoxLabel, KeypointsLabel, ManifestItem, MaskLabel, PolygonLabel

ImageSource = Callable[[], Image.Image] | str | os.PathLike[str] | bytes
"""How to get an item's image: a callable returning an opened image, a file path, or bytes."""

# errors that mean "these bytes are not a usable image"; anything else (a storage outage) raises
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class UnreadableItem(BaseModel):
    item_id: str
    reason: str


class ExactDuplicateGroup(BaseModel):
    blob: str
    item_ids: list[str]


class NearDuplicateGroup(BaseModel):
    item_ids: list[str] = Field(description="one item per distinct blob, smallest id first")
    max_distance: int = Field(description="largest hash distance of a pair that joined the group")


class OutOfBounds(BaseModel):
    item_id: str
    label_index: int
    kind: Literal["box", "polygon_point", "keypoint", "mask_size"]
    detail: str


class SizeMismatch(BaseModel):
    item_id: str
    manifest: tuple[int | None, int | None]
    image: tuple[int, int]


class ImageSizes(BaseModel):
    count: int
    min_width: int
    max_width: int
    mean_width: float
    min_height: int
    max_height: int
    mean_height: float


class QualityCounts(BaseModel):
    items: int = 0
    distinct_blobs: int = 0
    readable: int = 0
    unreadable: int = 0
    labelled: int = 0
    unlabelled: int = 0
    labels: int = 0
    exact_duplicate_items: int = Field(
        default=0, description="items whose blob an earlier item has"
    )
    near_duplicate_groups: int = 0
    out_of_bounds: int = 0
    size_mismatches: int = 0


class QualityReport(BaseModel):
    """Findings over a list of items; lists are capped at ``max_listed``, counts are not."""

    counts: QualityCounts
    unreadable: list[UnreadableItem]
    exact_duplicates: list[ExactDuplicateGroup]
    near_duplicates: list[NearDuplicateGroup]
    label_distribution: dict[str, int] = Field(description="label instances per label name")
    items_per_label: dict[str, int] = Field(description="items with at least one such label")
    imbalance_ratio: float | None = Field(description="most / least frequent label; None if none")
    imbalanced: bool
    unlabelled_items: int
    out_of_bounds: list[OutOfBounds]
    size_mismatches: list[SizeMismatch] = Field(description="manifest width/height vs image")
    image_sizes: ImageSizes | None
    near_duplicate_threshold: int
    imbalance_threshold: float
    summary: list[str]


# ---------------------------------------------------------------------------------------------
# Perceptual hashing
# ---------------------------------------------------------------------------------------------


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: is each pixel brighter than its right neighbour, on a 9x8 grey."""
    small = image.convert("L").resize((9, 8), Image.Resampling.BOX, reducing_gap=2.0)
    pixels = np.asarray(small, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


_M1, _M2, _M4 = (np.uint64(m) for m in (0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F))
_H01 = np.uint64(0x0101010101010101)


def _distances(rows: NDArray[np.uint64], others: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Hamming distances of each of ``rows`` to each of ``others``, as a grid."""
    # SWAR popcount on whole uint64 words: a few vector ops instead of eight byte lookups
    x = np.bitwise_xor(rows[:, None], others[None, :])
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


def near_duplicate_pairs(hashes: list[int], threshold: int) -> list[tuple[int, int, int]]:
    """Index pairs ``(i, j, distance)`` with ``i < j`` of hashes at most ``threshold`` apart."""
    if len(hashes) < 2:
        return []
    values = np.array(hashes, dtype=np.uint64)
    bands = threshold + 1
    edges = [round(64 * b / bands) for b in range(bands + 1)]
    found: dict[tuple[int, int], int] = {}
    for low, high in zip(edges, edges[1:], strict=False):
        keys = (values >> np.uint64(low)) & np.uint64((1 << (high - low)) - 1)
        order = np.argsort(keys, kind="stable")
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
        for start, end in zip(starts, [*starts[1:], len(order)], strict=True):
            if end - start < 2:
                continue
            members = order[start:end]
            # row blocks bound memory when one bucket is large (many similar images)
            step = max(1, 1_000_000 // len(members))
            for offset in range(0, len(members), step):
                rows, columns = members[offset : offset + step], members[offset:]
                # the grid is symmetric: compare each row block with itself and what follows
                grid = _distances(values[rows], values[columns])
                for r, c in zip(*np.nonzero(grid <= threshold), strict=True):
                    i, j = int(rows[r]), int(columns[c])
                    if i != j:
                        found[(min(i, j), max(i, j))] = int(grid[r, c])
    return [(i, j, d) for (i, j), d in sorted(found.items())]


# ---------------------------------------------------------------------------------------------
# Checker
# ---------------------------------------------------------------------------------------------


_E = TypeVar("_E")


@dataclass
class _Blob:
    item_ids: list[str]
    size: tuple[int, int] | None
    hash: int | None
    error: str | None


def _open(source: ImageSource) -> Image.Image:
    if callable(source):
        return source()
    if isinstance(source, bytes):
        return Image.open(io.BytesIO(source))
    return Image.open(source)


def _reason(exc: BaseException, source: ImageSource) -> str:
    # PIL's own message names the temp file or buffer: useless in a stored report, and unstable
    if isinstance(source, bytes) and not source:
        return "empty file (is the blob missing?)"
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    return f"{type(exc).__name__}: {exc}"[:300]


def _inspect(source: ImageSource) -> tuple[tuple[int, int], int]:
    with _open(source) as image:
        size = image.size
        # JPEGs decode at a reduced scale: the hash needs 9x8 pixels, not 40 megapixels
        image.draft("RGB", (64, 64))
        image.load()
        return size, dhash(image)


class QualityChecker:
    """Accumulates findings item by item; :meth:`report` summarises them."""

    def __init__(
        self,
        *,
        near_duplicate_threshold: int = 6,
        imbalance_threshold: float = 10.0,
        bounds_tolerance: float = 0.5,
        max_listed: int = 1000,
    ) -> None:
        if not 0 <= near_duplicate_threshold <= 32:
            raise ValueError("near_duplicate_threshold must be between 0 and 32 bits")
        if imbalance_threshold < 1:
            raise ValueError("imbalance_threshold must be at least 1")
        self.near_duplicate_threshold = near_duplicate_threshold
        self.imbalance_threshold = imbalance_threshold
        self.bounds_tolerance = bounds_tolerance
        self.max_listed = max_listed
        self._counts = QualityCounts()
        self._blobs: dict[str, _Blob] = {}
        self._seen: set[str] = set()
        self._labels: Counter[str] = Counter()
        self._items_per_label: Counter[str] = Counter()
        self._unreadable: list[UnreadableItem] = []
        self._out_of_bounds: list[OutOfBounds] = []
        self._size_mismatches: list[SizeMismatch] = []

    def add(self, item: ManifestItem, source: ImageSource) -> None:
        """Check one item; ``source`` is used only if the item's blob is new to the checker."""
        if item.item_id in self._seen:
            raise ValueError(f"item {item.item_id!r} was added twice")
        self._seen.add(item.item_id)
        counts = self._counts
        counts.items += 1

        blob = self._blobs.get(item.blob)
        if blob is None:
            try:
                image_size, hash_ = _inspect(source)
                blob = _Blob([], image_size, hash_, None)
            except _UNREADABLE as exc:
                blob = _Blob([], None, None, _reason(exc, source))
            self._blobs[item.blob] = blob
        else:
            counts.exact_duplicate_items += 1
        blob.item_ids.append(item.item_id)

        if blob.error is not None:
            counts.unreadable += 1
            self._listed(self._unreadable, UnreadableItem(item_id=item.item_id, reason=blob.error))
        else:
            counts.readable += 1

        if item.labels:
            counts.labelled += 1
            counts.labels += len(item.labels)
            self._labels.update(label.label for label in item.labels)
            self._items_per_label.update({label.label for label in item.labels})
        else:
            counts.unlabelled += 1

        if blob.size is not None and (item.width, item.height) not in ((None, None), blob.size):
            counts.size_mismatches += 1
            mismatch = SizeMismatch(
                item_id=item.item_id, manifest=(item.width, item.height), image=blob.size
            )
            self._listed(self._size_mismatches, mismatch)

        # an unreadable image is still checked against the manifest's size when it has one
        size = blob.size or ((item.width, item.height) if item.width and item.height else None)
        if size is not None:
            for finding in self._bounds(item, size):
                counts.out_of_bounds += 1
                self._listed(self._out_of_bounds, finding)

    def _listed(self, target: list[_E], entry: _E) -> None:
        if len(target) < self.max_listed:
            target.append(entry)

    def _bounds(self, item: ManifestItem, size: tuple[int, int]) -> Iterable[OutOfBounds]:
        width, height = size
        tol = self.bounds_tolerance

        def outside(x: float, y: float) -> bool:
            return not (-tol <= x <= width + tol and -tol <= y <= height + tol)

        def finding(index: int, kind: str, detail: str) -> OutOfBounds:
            return OutOfBounds.model_validate(
                {"item_id": item.item_id, "label_index": index, "kind": kind, "detail": detail}
            )

        for index, label in enumerate(item.labels):
            if isinstance(label, BoxLabel):
                x, y, w, h = label.bbox
                if outside(x, y) or outside(x + w, y + h):
                    detail = f"box {label.bbox} outside image {width}x{height}"
                    yield finding(index, "box", detail)
            elif isinstance(label, PolygonLabel):
                points = (
                    (x, y)
                    for ring in label.polygons
                    for x, y in zip(ring[0::2], ring[1::2], strict=True)
                )
                point = next((p for p in points if outside(*p)), None)
                if point is not None:
                    detail = f"point {list(point)} outside image {width}x{height}"
                    yield finding(index, "polygon_point", detail)
            elif isinstance(label, MaskLabel):
                if list(label.rle.size) != [height, width]:
                    detail = f"mask size {label.rle.size} (h, w) != image [{height}, {width}]"
                    yield finding(index, "mask_size", detail)
            elif isinstance(label, KeypointsLabel):
                kp = label.keypoints
                bad = next(
                    (
                        (kp[i], kp[i + 1])
                        for i in range(0, len(kp) - 2, 3)
                        if kp[i + 2] > 0 and outside(kp[i], kp[i + 1])
                    ),
                    None,
                )
                if bad is not None:
                    detail = f"keypoint {list(bad)} outside image {width}x{height}"
                    yield finding(index, "keypoint", detail)

    def report(self) -> QualityReport:
        counts = self._counts.model_copy()
        counts.distinct_blobs = len(self._blobs)

        exact = [
            ExactDuplicateGroup(blob=sha, item_ids=sorted(blob.item_ids))
            for sha, blob in self._blobs.items()
            if len(blob.item_ids) > 1
        ]
        exact.sort(key=lambda g: (-len(g.item_ids), g.item_ids[0]))

        near = self._near_duplicates()
        counts.near_duplicate_groups = len(near)

        ratio: float | None = None
        if self._labels:
            ratio = max(self._labels.values()) / min(self._labels.values())
        imbalanced = ratio is not None and ratio > self.imbalance_threshold

        sizes = [blob.size for blob in self._blobs.values() if blob.size is not None]
        image_sizes = None
        if sizes:
            widths = [w for w, _ in sizes]
            heights = [h for _, h in sizes]
            image_sizes = ImageSizes(
                count=len(sizes),
                min_width=min(widths),
                max_width=max(widths),
                mean_width=sum(widths) / len(widths),
                min_height=min(heights),
                max_height=max(heights),
                mean_height=sum(heights) / len(heights),
            )

        report = QualityReport(
            counts=counts,
            unreadable=self._unreadable,
            exact_duplicates=exact[: self.max_listed],
            near_duplicates=near[: self.max_listed],
            label_distribution=dict(sorted(self._labels.items())),
            items_per_label=dict(sorted(self._items_per_label.items())),
            imbalance_ratio=ratio,
            imbalanced=imbalanced,
            unlabelled_items=counts.unlabelled,
            out_of_bounds=self._out_of_bounds,
            size_mismatches=self._size_mismatches,
            image_sizes=image_sizes,
            near_duplicate_threshold=self.near_duplicate_threshold,
            imbalance_threshold=self.imbalance_threshold,
            summary=[],
        )
        report.summary = _summary(report, self._labels)
        return report

    def _near_duplicates(self) -> list[NearDuplicateGroup]:
        # one representative (smallest item id) per distinct blob: exact copies are reported apart
        hashed = [
            (min(blob.item_ids), blob.hash)
            for blob in self._blobs.values()
            if blob.hash is not None
        ]
        pairs = near_duplicate_pairs([h for _, h in hashed], self.near_duplicate_threshold)
        parent = list(range(len(hashed)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, j, _ in pairs:
            parent[root(i)] = root(j)
        members: defaultdict[int, list[int]] = defaultdict(list)
        worst: defaultdict[int, int] = defaultdict(int)
        for i, _j, distance in pairs:
            worst[root(i)] = max(worst[root(i)], distance)
        for i in {k for pair in pairs for k in pair[:2]}:
            members[root(i)].append(i)
        groups = [
            NearDuplicateGroup(item_ids=sorted(hashed[i][0] for i in group), max_distance=worst[r])
            for r, group in members.items()
        ]
        groups.sort(key=lambda g: (-len(g.item_ids), g.item_ids[0]))
        return groups


def _summary(report: QualityReport, labels: Counter[str]) -> list[str]:
    counts = report.counts
    lines = [
        f"{counts.items} items, {counts.distinct_blobs} distinct images, "
        f"{counts.labelled} labelled with {counts.labels} labels over {len(labels)} classes."
    ]
    if counts.unreadable:
        lines.append(f"{counts.unreadable} items have an image that cannot be decoded.")
    if counts.exact_duplicate_items:
        lines.append(
            f"{counts.exact_duplicate_items} items repeat an earlier item's exact image "
            f"({len(report.exact_duplicates)} groups)."
        )
    if counts.near_duplicate_groups:
        lines.append(
            f"{counts.near_duplicate_groups} groups of near-duplicate images "
            f"(dHash distance <= {report.near_duplicate_threshold})."
        )
    if counts.unlabelled:
        lines.append(f"{counts.unlabelled} items have no labels.")
    if report.imbalance_ratio is not None and report.imbalanced:
        common, rare = labels.most_common()[0], min(labels.items(), key=lambda kv: (kv[1], kv[0]))
        lines.append(
            f"Labels are imbalanced: '{common[0]}' has {common[1]} instances, '{rare[0]}' "
            f"{rare[1]} (ratio {report.imbalance_ratio:.1f} > {report.imbalance_threshold:g})."
        )
    if counts.out_of_bounds:
        lines.append(f"{counts.out_of_bounds} labels lie outside their image.")
    if counts.size_mismatches:
        lines.append(
            f"{counts.size_mismatches} items' manifest width/height differ from the image."
        )
    if report.image_sizes is not None:
        s = report.image_sizes
        if (s.min_width, s.min_height) != (s.max_width, s.max_height):
            lines.append(
                f"Image sizes vary from {s.min_width}x{s.min_height} "
                f"to {s.max_width}x{s.max_height}."
            )
    if len(lines) == 1:
        lines.append("No problems found.")
    return lines


def build_quality_report(
    entries: Iterable[tuple[ManifestItem, ImageSource]],
    *,
    near_duplicate_threshold: int = 6,
    imbalance_threshold: float = 10.0,
    bounds_tolerance: float = 0.5,
    max_listed: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> QualityReport:
    """Check items one at a time; ``progress`` is called with the number of items done so far."""
    checker = QualityChecker(
        near_duplicate_threshold=near_duplicate_threshold,
        imbalance_threshold=imbalance_threshold,
        bounds_tolerance=bounds_tolerance,
        max_listed=max_listed,
    )
    for done, (item, source) in enumerate(entries, 1):
        checker.add(item, source)
        if progress is not None:
            progress(done)
    return checker.report()


__all__ = [
    "ImageSource",
    "QualityChecker",
    "QualityReport",
    "build_quality_report",
    "dhash",
    "hamming",
    "near_duplicate_pairs",
]
