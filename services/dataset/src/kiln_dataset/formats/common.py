"""What every importer returns, and the file and geometry plumbing they share."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pycocotools import mask as mask_utils
from pydantic import TypeAdapter, ValidationError

from kiln_core.errors import ValidationFailed
from kiln_core.manifest import (
    BoxLabel,
    Category,
    Label,
    ManifestItem,
    MaskLabel,
    PolygonLabel,
    Rle,
    Split,
)
from kiln_core.storage import ObjectStore, blob_key
from kiln_dataset.archive import is_junk
from kiln_dataset.media import IMAGE_EXTENSIONS

ReadBlob = Callable[[str], AsyncIterator[bytes]]

PREFETCH_ITEMS = 256
PREFETCH_BYTES = 16 * 1024 * 1024
PREFETCH_SMALL = 1024 * 1024


class PrefetchingReader:
    """A :data:`ReadBlob` for an export that reads ``items`` in order: the small blobs of the
    next few hundred items come in one store call (one thread hop on the local store; reads in
    parallel on S3) instead of one or two round trips each. A call out of that order, or for a
    large blob, streams it from the store as usual, so the answer never depends on the order."""

    def __init__(self, store: ObjectStore, items: list[ManifestItem]) -> None:
        self.store = store
        self.order = [(i.blob, i.size_bytes) for i in items]
        self.next = 0
        self.window: dict[str, bytes] = {}

    def __call__(self, sha: str) -> AsyncIterator[bytes]:
        return self._read(sha)

    async def _read(self, sha: str) -> AsyncIterator[bytes]:
        at, self.next = self.next, self.next + 1
        data = self.window.get(sha)
        if data is None and at < len(self.order):
            expected, size = self.order[at]
            if expected == sha and size <= PREFETCH_SMALL:
                await self._fill(at)
                data = self.window.get(sha)
        if data is None:
            async for chunk in self.store.stream(blob_key(sha)):
                yield chunk
            return
        yield data

    async def _fill(self, start: int) -> None:
        wanted: dict[str, None] = {}
        total = 0
        for sha, size in self.order[start : start + PREFETCH_ITEMS]:
            if size > PREFETCH_SMALL or sha in wanted:
                continue
            if total + size > PREFETCH_BYTES and wanted:
                break
            wanted[sha] = None
            total += size
        found = await self.store.read_many([blob_key(sha) for sha in wanted])
        self.window = {sha: found[blob_key(sha)] for sha in wanted if blob_key(sha) in found}


SPLIT_NAMES: dict[str, Split] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

# Folder names that are part of a layout, never a wrapper to step into.
_LAYOUT_DIRS = frozenset({"images", "labels", "annotations", "jpegimages", "imagesets"})

LABEL = TypeAdapter[Label](Label)


@dataclass
class ItemProblem:
    """Something wrong with one item (or one file) that did not stop the import."""

    kind: str  # missing-file, unknown-category, bad-annotation, unreadable-image, orphan-label, …
    message: str
    source_name: str = ""


@dataclass
class ImportEntry:
    """One image found by an importer, with its labels in the unified manifest format."""

    path: Path | None  # the image on disk; None when the annotations name a missing file
    source_name: str  # path relative to the dataset root
    labels: list[Label] = field(default_factory=list)
    split: Split | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    problems: list[ItemProblem] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    item_id: str | None = None  # only a JSON Lines manifest carries one


@dataclass
class ImportResult:
    format: str
    categories: list[Category]
    entries: list[ImportEntry]
    # Problems that belong to no single image (an annotation for an unknown image id, …).
    problems: list[ItemProblem] = field(default_factory=list)


class UnknownFormat(ValidationFailed, ValueError):
    """No importer recognises the directory's layout, or the format name is unknown."""

    type, title = "unknown-format", "Unknown dataset format"


class DatasetFiles:
    """Regular files under a dataset root, found without following links and skipping junk."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.files: list[PurePosixPath] = []
        # Files skipped because their names are not UTF-8 (tar keeps names as raw bytes), shown
        # with replacement characters; each is reported as a problem of its own.
        self.bad_names: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = PurePosixPath(Path(dirpath).relative_to(self.root).as_posix())
            dirnames[:] = sorted(d for d in dirnames if not is_junk(rel / d))
            for name in sorted(filenames):
                path = rel / name
                full = os.path.join(dirpath, name)
                if not is_junk(path) and os.path.isfile(full) and not os.path.islink(full):
                    if _is_text(path.as_posix()):
                        self.files.append(path)
                    else:
                        self.bad_names.append(_printable(path.as_posix()))
        self._by_name: dict[str, list[PurePosixPath]] = {}
        for path in self.files:
            self._by_name.setdefault(path.name.lower(), []).append(path)

    def images(self, under: PurePosixPath | None = None) -> list[PurePosixPath]:
        return [
            p
            for p in self.files
            if p.suffix.lower() in IMAGE_EXTENSIONS and (under is None or p.is_relative_to(under))
        ]

    def with_suffix(self, *suffixes: str) -> list[PurePosixPath]:
        return [p for p in self.files if p.suffix.lower() in suffixes]

    def disk(self, rel: PurePosixPath) -> Path:
        return self.root.joinpath(*rel.parts)

    def resolve(self, name: str, *bases: PurePosixPath) -> PurePosixPath | None:
        """Find a file an annotation refers to: relative to each base, then by unique tail match.

        Never returns a path outside the root, whatever ``..`` the name holds.
        """
        clean = _clean(name)
        if clean is None:
            return None
        known = set(self.files)
        for base in (*bases, PurePosixPath()):
            candidate = _clean((base / clean).as_posix())
            if candidate is not None and candidate in known:
                return candidate
        matches = [p for p in self._by_name.get(clean.name.lower(), []) if _tail(p, clean)]
        if not matches:
            matches = self._by_name.get(clean.name.lower(), [])
        return matches[0] if len(matches) == 1 else None


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by the OS as lone surrogates
        return False
    return True


def _printable(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _clean(name: str) -> PurePosixPath | None:
    parts: list[str] = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return PurePosixPath(*parts) if parts else None


def _tail(path: PurePosixPath, tail: PurePosixPath) -> bool:
    n = len(tail.parts)
    return [p.lower() for p in path.parts[-n:]] == [p.lower() for p in tail.parts]


def split_of(path: PurePosixPath) -> Split | None:
    """The split a path's folders name (``train/``, ``valid/``, ``test/`` …), innermost first."""
    for part in reversed(path.parent.parts):
        split = SPLIT_NAMES.get(part.lower())
        if split:
            return split
    return None


def dataset_root(root: Path) -> Path:
    """Step into a lone top-level folder that itself holds folders (an archive's wrapper)."""
    root = root.resolve()
    for _ in range(3):
        children = [c for c in root.iterdir() if not is_junk(PurePosixPath(c.name))]
        if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
            inner = children[0]
            if inner.name.lower() in SPLIT_NAMES or inner.name.lower() in _LAYOUT_DIRS:
                break
            if any(c.is_dir() for c in inner.iterdir()):
                root = inner
                continue
        break
    return root


def categories_from_names(names: Iterable[str], start: int = 1) -> list[Category]:
    return [Category(id=i, name=n) for i, n in enumerate(sorted(set(names)), start)]


def make_label(data: dict[str, Any]) -> Label:
    """Validate a label dict into a manifest label; raises ValueError with pydantic's reason."""
    try:
        return LABEL.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {first['msg']}" if where else first["msg"]) from None


def finite(values: Iterable[Any]) -> list[float]:
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ValueError("coordinates must be finite numbers")
    return out


def polygon_bbox(rings: list[list[float]]) -> list[float]:
    xs = [x for ring in rings for x in ring[0::2]]
    ys = [y for ring in rings for y in ring[1::2]]
    x0, y0 = min(xs), min(ys)
    return [x0, y0, max(xs) - x0, max(ys) - y0]


def shoelace(ring: list[float]) -> float:
    xs, ys = ring[0::2], ring[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


def compressed_rle(rle: Rle) -> dict[str, Any]:
    """A pycocotools compressed RLE from either form of ``counts``."""
    height, width = rle.size
    if isinstance(rle.counts, list):
        return mask_utils.frPyObjects({"size": rle.size, "counts": rle.counts}, height, width)
    return {"size": rle.size, "counts": rle.counts.encode()}


def shape_bbox(label: Label) -> list[float] | None:
    """The ``[x, y, w, h]`` box of a box, polygon or mask label; None for other labels."""
    if isinstance(label, BoxLabel):
        return label.bbox
    if isinstance(label, PolygonLabel):
        return label.bbox or polygon_bbox(label.polygons)
    if isinstance(label, MaskLabel):
        return label.bbox or [float(v) for v in mask_utils.toBbox(compressed_rle(label.rle))]
    return None
