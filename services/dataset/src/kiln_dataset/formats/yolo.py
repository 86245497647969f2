"""YOLO (Ultralytics/Darknet): ``images/`` and ``labels/`` with one ``.txt`` per image.

Label lines are ``class cx cy w h`` (normalised to the image size), optionally followed by a
confidence, or ``class x1 y1 x2 y2 …`` for segmentation polygons; with ``kpt_shape`` in
``data.yaml`` a box line is followed by keypoints. Class names come from ``data.yaml``,
``classes.txt`` or ``*.names``; a category's id is its class index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import PurePosixPath
from typing import Any

import yaml

from kiln_core.manifest import (
    BoxLabel,
    Category,
    Label,
    ManifestItem,
    MaskLabel,
    PolygonLabel,
)
from kiln_dataset.formats.common import (
    DatasetFiles,
    ImportEntry,
    ImportResult,
    ItemProblem,
    ReadBlob,
    UnknownFormat,
    finite,
    make_label,
    polygon_bbox,
    shape_bbox,
    split_of,
)
from kiln_dataset.formats.zipout import ExportNames, ZipOut
from kiln_dataset.media import UnreadableImage, image_size

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
LIST_NAMES = ("classes.txt", "obj.names")
# Normalised coordinates a little outside [0, 1] are rounding; far outside they are pixels.
_SLACK = 0.01


def _names_files(files: DatasetFiles) -> list[PurePosixPath]:
    shallow = [p for p in files.files if len(p.parts) <= 2]
    yaml = [p for p in shallow if p.name.lower() in YAML_NAMES]
    lists = [p for p in shallow if p.name.lower() in LIST_NAMES or p.suffix.lower() == ".names"]
    return yaml + lists


def _label_files(files: DatasetFiles) -> set[PurePosixPath]:
    names = set(_names_files(files))
    return {p for p in files.with_suffix(".txt") if p not in names}


def looks_like_yolo(files: DatasetFiles) -> bool:
    labels = _label_files(files)
    if any("labels" in (part.lower() for part in p.parts[:-1]) for p in labels):
        return True
    return bool(_names_files(files)) and any(_label_for(img, labels) for img in files.images())


def _label_for(image: PurePosixPath, labels: set[PurePosixPath]) -> PurePosixPath | None:
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].lower() == "images":
            swapped = PurePosixPath(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
            if swapped in labels:
                return swapped
            break
    beside = image.with_suffix(".txt")
    return beside if beside in labels else None


def import_yolo(files: DatasetFiles) -> ImportResult:
    labels = _label_files(files)
    images = files.images()
    if not images:
        raise UnknownFormat("no images found")
    result = ImportResult(format="yolo", categories=[], entries=[])
    names, kpt_shape = _class_names(files, result)
    parsed: list[tuple[ImportEntry, list[tuple[int, list[float]]]]] = []
    used: set[PurePosixPath] = set()
    for image in images:
        entry = ImportEntry(
            path=files.disk(image), source_name=image.as_posix(), split=split_of(image)
        )
        lines: list[tuple[int, list[float]]] = []
        label_path = _label_for(image, labels)
        if label_path is not None:
            used.add(label_path)
            lines = _read_lines(files, label_path, entry)
        parsed.append((entry, lines))
    for orphan in sorted(labels - used):
        if "labels" in (p.lower() for p in orphan.parts[:-1]):
            result.problems.append(
                ItemProblem("orphan-label", "label file has no image", orphan.as_posix())
            )

    if names is None:
        top = max((cls for _, lines in parsed for cls, _ in lines), default=-1)
        names = [str(i) for i in range(top + 1)]
        if names:
            result.problems.append(
                ItemProblem("no-class-names", "no data.yaml, classes.txt or obj.names found")
            )
    result.categories = [Category(id=i, name=n) for i, n in enumerate(names)]
    for entry, lines in parsed:
        if lines:
            _to_labels(entry, lines, names, kpt_shape)
        result.entries.append(entry)
    return result


def _read_lines(
    files: DatasetFiles, path: PurePosixPath, entry: ImportEntry
) -> list[tuple[int, list[float]]]:
    lines = []
    text = files.disk(path).read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        try:
            cls = float(tokens[0])
            if not cls.is_integer() or cls < 0:
                raise ValueError(f"class {tokens[0]!r} is not a class index")
            lines.append((int(cls), finite(tokens[1:])))
        except ValueError as exc:
            entry.problems.append(
                ItemProblem("bad-annotation", f"{path.as_posix()} line {number}: {exc}")
            )
    return lines


def _to_labels(
    entry: ImportEntry,
    lines: list[tuple[int, list[float]]],
    names: list[str],
    kpt_shape: tuple[int, int] | None,
) -> None:
    try:
        assert entry.path is not None
        entry.width, entry.height = image_size(entry.path)
    except UnreadableImage as exc:
        entry.problems.append(ItemProblem("unreadable-image", exc.reason))
        return
    w, h = entry.width, entry.height
    for cls, values in lines:
        if cls >= len(names):
            entry.problems.append(
                ItemProblem("unknown-category", f"class index {cls} but {len(names)} names")
            )
            continue
        try:
            entry.labels.append(_label(names[cls], values, w, h, kpt_shape))
        except ValueError as exc:
            entry.problems.append(ItemProblem("bad-annotation", f"class {cls}: {exc}"))


def _label(name: str, v: list[float], w: int, h: int, kpt_shape: tuple[int, int] | None) -> Label:
    polygon = len(v) >= 6 and len(v) % 2 == 0
    if kpt_shape and len(v) == 4 + kpt_shape[0] * kpt_shape[1]:
        polygon = False
    if any(c < -_SLACK or c > 1 + _SLACK for c in (v if polygon else v[:4])):
        raise ValueError("coordinates are not normalised to 0..1")
    box: dict[str, Any] = {"type": "box", "label": name}
    if len(v) >= 4:
        cx, cy, bw, bh = v[0] * w, v[1] * h, v[2] * w, v[3] * h
        box["bbox"] = [cx - bw / 2, cy - bh / 2, bw, bh]
    if kpt_shape and len(v) == 4 + kpt_shape[0] * kpt_shape[1]:
        points, dims = v[4:], kpt_shape[1]
        keypoints: list[float] = []
        for i in range(0, len(points), dims):
            visible = points[i + 2] if dims == 3 else 2.0
            keypoints += [points[i] * w, points[i + 1] * h, visible]
        data = {"type": "keypoints", "label": name, "keypoints": keypoints, "bbox": box["bbox"]}
        return make_label(data)
    if len(v) == 4:
        return make_label(box)
    if len(v) == 5:
        return make_label({**box, "score": v[4]})
    if polygon:
        ring = [c * (w if i % 2 == 0 else h) for i, c in enumerate(v)]
        data = {"type": "polygon", "label": name, "polygons": [ring], "bbox": polygon_bbox([ring])}
        return make_label(data)
    raise ValueError(f"{len(v)} numbers fit neither a box nor a polygon")


def _class_names(
    files: DatasetFiles, result: ImportResult
) -> tuple[list[str] | None, tuple[int, int] | None]:
    for path in _names_files(files):
        text = files.disk(path).read_text(encoding="utf-8", errors="replace")
        if path.name.lower() in YAML_NAMES:
            try:
                names, kpt_shape = parse_data_yaml(text)
            except ValueError as exc:
                result.problems.append(ItemProblem("bad-class-names", str(exc), path.as_posix()))
                continue
            if names:
                return names, kpt_shape
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
            if names:
                return names, None
    return None, None


def parse_data_yaml(text: str) -> tuple[list[str] | None, tuple[int, int] | None]:
    """``names`` and ``kpt_shape`` from an Ultralytics ``data.yaml``, read with a YAML parser.

    ``names`` may be a list or an index-to-name mapping; indexes must be 0..n-1. Raises
    ``ValueError`` for a file that is not YAML or holds names in another shape.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"data.yaml is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        return None, None
    return _names(data.get("names")), _kpt_shape(data.get("kpt_shape"))


def _names(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [_name(v) for v in value]
    if isinstance(value, dict):
        try:
            block = {int(k): _name(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise ValueError("class indexes in data.yaml names are not integers") from None
        if sorted(block) != list(range(len(block))):
            raise ValueError("class indexes in data.yaml names are not 0..n-1")
        return [block[k] for k in range(len(block))]
    raise ValueError("data.yaml names is neither a list nor a mapping")


def _name(value: Any) -> str:
    # YAML reads `1` or `yes` as a number or a boolean; a class name is always its text.
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, list | dict):
        raise ValueError(f"class name {value!r} is not a plain value")
    return str(value)


def _kpt_shape(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, list) or not value:
        return None
    try:
        return (int(value[0]), int(value[1]) if len(value) > 1 else 2)
    except (TypeError, ValueError):
        raise ValueError("kpt_shape in data.yaml is not a list of integers") from None


# --- export ---------------------------------------------------------------------------------


async def export_yolo(
    items: list[ManifestItem], categories: list[Category], read_blob: ReadBlob
) -> AsyncIterator[bytes]:
    """A ZIP of ``images/<split>/``, ``labels/<split>/`` and ``data.yaml``.

    Class indexes follow the order of ``categories``. Masks are written as their boxes
    (YOLO has no run-length masks); class and keypoint labels are not written.
    """
    names = [c.name for c in categories]
    for item in items:
        for label in item.labels:
            if isinstance(label, BoxLabel | PolygonLabel | MaskLabel) and label.label not in names:
                names.append(label.label)
    index = {name: i for i, name in enumerate(names)}
    any_split = any(item.split for item in items)
    splits: set[str] = set()
    zout, file_names = ZipOut(), ExportNames()
    for item in items:
        split = item.split or ("train" if any_split else "")
        splits.add(split)
        name = file_names.claim(item)
        sub = f"/{split}" if split else ""
        measure = item.width is None or item.height is None
        async for chunk in zout.add_blob(f"images{sub}/{name}", item, read_blob, measure=measure):
            yield chunk
        size = zout.last_size if measure else (item.width, item.height)
        text = "".join(_lines(item, index, size)).encode()
        for chunk in zout.add_text(f"labels{sub}/{PurePosixPath(name).stem}.txt", [text]):
            yield chunk
    for chunk in zout.add_text("data.yaml", [data_yaml(names, splits).encode()]):
        yield chunk
    yield zout.close()


def _lines(
    item: ManifestItem, index: dict[str, int], size: tuple[Any, Any] | None
) -> Iterator[str]:
    if size is None or not size[0] or not size[1]:
        return
    w, h = float(size[0]), float(size[1])
    for label in item.labels:
        if label.label not in index:
            continue
        cls = index[label.label]
        if isinstance(label, PolygonLabel):
            for ring in label.polygons:
                coords = [c / (w if i % 2 == 0 else h) for i, c in enumerate(ring)]
                yield f"{cls} " + " ".join(_num(c) for c in coords) + "\n"
            continue
        bbox = shape_bbox(label)
        if bbox is None:
            continue
        x, y, bw, bh = bbox
        values = [(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h]
        yield f"{cls} " + " ".join(_num(c) for c in values) + "\n"


def _num(value: float) -> str:
    return format(value, ".10g")


def data_yaml(names: list[str], splits: set[str]) -> str:
    data: dict[str, Any] = {"path": "."}
    if splits == {""}:
        data |= {"train": "images", "val": "images"}
    else:
        for split in ("train", "val", "test"):
            if split in splits:
                data[split] = f"images/{split}"
        if "val" not in splits:
            data["val"] = "images/train"  # Ultralytics refuses a data.yaml without val
    data["nc"] = len(names)
    # The YAML emitter quotes or escapes whatever a class name holds.
    data["names"] = dict(enumerate(names))
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1_000_000)
