"""COCO: one or more JSON files of images, annotations and categories.

COCO image ids are kept in item metadata (``coco_image_id``) and annotation ids in label
attributes (``coco_annotation_id``) so an export gives the same ids back; keypoints that share an
annotation with a box, polygon or mask are written back into that one annotation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import PurePosixPath
from typing import Any

from pycocotools import mask as mask_utils

from kiln_core.manifest import (
    BoxLabel,
    Category,
    KeypointsLabel,
    Label,
    ManifestItem,
    MaskLabel,
    PolygonLabel,
    Split,
)
from kiln_dataset.formats.common import (
    SPLIT_NAMES,
    DatasetFiles,
    ImportEntry,
    ImportResult,
    ItemProblem,
    ReadBlob,
    UnknownFormat,
    compressed_rle,
    finite,
    make_label,
    polygon_bbox,
    shoelace,
)
from kiln_dataset.formats.zipout import ExportNames, ZipOut

ANNOTATION_ID = "coco_annotation_id"
IMAGE_ID = "coco_image_id"
_PROBE = 1024 * 1024


def coco_files(files: DatasetFiles) -> list[PurePosixPath]:
    """JSON files at most two folders deep that look like COCO (images plus annotations)."""
    found = []
    for path in files.with_suffix(".json"):
        if len(path.parts) <= 3 and _looks_like_coco(files, path):
            found.append(path)
    return found


def _looks_like_coco(files: DatasetFiles, path: PurePosixPath) -> bool:
    # A cheap scan for the top-level keys, so detection never parses a huge JSON.
    wanted = {b'"images"': False, b'"annotations"': False}
    tail = b""
    with open(files.disk(path), "rb") as f:
        while chunk := f.read(_PROBE):
            window = tail + chunk
            for key in wanted:
                wanted[key] = wanted[key] or key in window
            if all(wanted.values()):
                return True
            tail = window[-16:]
    return False


def import_coco(files: DatasetFiles) -> ImportResult:
    jsons = coco_files(files)
    if not jsons:
        raise UnknownFormat("no COCO annotation JSON found")
    result = ImportResult(format="coco", categories=[], entries=[])
    categories: dict[int, Category] = {}
    by_path: dict[PurePosixPath | str, ImportEntry] = {}
    for json_path in jsons:
        _import_one(files, json_path, categories, by_path, result)
    result.categories = sorted(categories.values(), key=lambda c: c.id)
    result.entries = list(by_path.values())
    return result


def _import_one(
    files: DatasetFiles,
    json_path: PurePosixPath,
    categories: dict[int, Category],
    by_path: dict[PurePosixPath | str, ImportEntry],
    result: ImportResult,
) -> None:
    source = json_path.as_posix()
    try:
        with open(files.disk(json_path), "rb") as f:
            data = json.load(f)
        images, annotations = data["images"], data.get("annotations") or []
        if not isinstance(images, list) or not isinstance(annotations, list):
            raise TypeError("images and annotations must be lists")
    except (ValueError, KeyError, TypeError) as exc:
        result.problems.append(ItemProblem("unreadable-annotations", str(exc), source))
        return
    names: dict[int, str] = {}
    for raw in data.get("categories") or []:
        try:
            cat = Category(
                id=raw["id"], name=str(raw["name"]), supercategory=raw.get("supercategory")
            )
        except (KeyError, TypeError, ValueError) as exc:
            result.problems.append(ItemProblem("bad-category", f"category {raw!r}: {exc}", source))
            continue
        known = categories.setdefault(cat.id, cat)
        if known.name != cat.name:
            result.problems.append(
                ItemProblem(
                    "bad-category",
                    f"category id {cat.id} is {cat.name!r} here but {known.name!r} elsewhere",
                    source,
                )
            )
        names[cat.id] = known.name

    split = _split_of_json(json_path)
    image_dirs = _image_dirs(json_path)
    by_id: dict[Any, ImportEntry] = {}
    for image in images:
        if not isinstance(image, dict) or "file_name" not in image:
            result.problems.append(ItemProblem("bad-image", f"image record {image!r}", source))
            continue
        file_name = str(image["file_name"])
        rel = files.resolve(file_name, *image_dirs)
        key: PurePosixPath | str = rel if rel is not None else file_name
        entry = by_path.get(key)
        if entry is None:
            entry = ImportEntry(
                path=files.disk(rel) if rel is not None else None,
                source_name=rel.as_posix() if rel is not None else file_name,
                split=split,
                width=_int(image.get("width")),
                height=_int(image.get("height")),
            )
            if "id" in image:
                entry.metadata[IMAGE_ID] = image["id"]
            if rel is None:
                entry.problems.append(
                    ItemProblem("missing-file", f"image file {file_name!r} is not in the upload")
                )
            by_path[key] = entry
        by_id[image.get("id")] = entry

    for ann in annotations:
        if not isinstance(ann, dict):
            continue
        entry = by_id.get(ann.get("image_id"))
        if entry is None:
            result.problems.append(
                ItemProblem(
                    "unknown-image",
                    f"annotation {ann.get('id')} refers to unknown image id {ann.get('image_id')}",
                    source,
                )
            )
            continue
        if "caption" in ann:
            entry.metadata.setdefault("captions", []).append(ann["caption"])
            continue
        name = names.get(ann.get("category_id"))  # type: ignore[arg-type]
        if name is None:
            entry.problems.append(
                ItemProblem(
                    "unknown-category",
                    f"annotation {ann.get('id')} has unknown category id {ann.get('category_id')}",
                )
            )
            continue
        try:
            entry.labels.extend(_labels(ann, name))
        except (ValueError, TypeError, KeyError) as exc:
            entry.problems.append(
                ItemProblem("bad-annotation", f"annotation {ann.get('id')}: {exc}")
            )


def _labels(ann: dict[str, Any], name: str) -> list[Label]:
    common: dict[str, Any] = {"label": name}
    attributes = dict(ann["attributes"]) if isinstance(ann.get("attributes"), dict) else {}
    if "id" in ann:
        attributes[ANNOTATION_ID] = ann["id"]
    common["attributes"] = attributes
    if ann.get("score") is not None:
        common["score"] = ann["score"]
    shape: dict[str, Any] = {"iscrowd": bool(ann.get("iscrowd", 0))}
    if ann.get("area") is not None:
        shape["area"] = float(ann["area"])
    bbox = finite(ann["bbox"]) if ann.get("bbox") else None
    segmentation = ann.get("segmentation")
    labels: list[Label] = []
    if isinstance(segmentation, dict):
        rle = {"size": segmentation["size"], "counts": segmentation["counts"]}
        labels.append(make_label({**common, **shape, "type": "mask", "rle": rle, "bbox": bbox}))
    elif isinstance(segmentation, list) and segmentation:
        rings = [finite(r) for r in segmentation]
        labels.append(
            make_label({**common, **shape, "type": "polygon", "polygons": rings, "bbox": bbox})
        )
    elif bbox is not None:
        labels.append(make_label({**common, **shape, "type": "box", "bbox": bbox}))
    keypoints = ann.get("keypoints")
    if keypoints:
        kp = {**common, "type": "keypoints", "keypoints": finite(keypoints), "bbox": bbox}
        labels.append(make_label(kp))
    if not labels:
        raise ValueError("annotation has no bbox, segmentation or keypoints")
    return labels


def _split_of_json(path: PurePosixPath) -> Split | None:
    words = [w for part in (path.stem, *path.parent.parts) for w in _words(part)]
    for word in words:
        split = SPLIT_NAMES.get(word) or SPLIT_NAMES.get(word.rstrip("0123456789"))
        if split:
            return split
    return None


def _words(text: str) -> list[str]:
    return [w for w in text.lower().replace("-", "_").replace(".", "_").split("_") if w]


def _image_dirs(json_path: PurePosixPath) -> list[PurePosixPath]:
    here, up = json_path.parent, json_path.parent.parent
    dirs = [here, here / "images", up, up / "images"]
    suffix = json_path.stem.rsplit("_", 1)[-1]  # instances_train2017 -> train2017
    if suffix != json_path.stem:
        dirs += [up / suffix, up / "images" / suffix]
    return dirs


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# --- export ---------------------------------------------------------------------------------


def category_ids(categories: list[Category], items: list[ManifestItem]) -> list[Category]:
    """The categories to export: the given ones, plus any label name they lack (new ids)."""
    out = list(categories)
    known = {c.name for c in out}
    next_id = max((c.id for c in out), default=0) + 1
    for item in items:
        for label in item.labels:
            if label.label not in known and label.type != "class":
                out.append(Category(id=next_id, name=label.label))
                known.add(label.label)
                next_id += 1
    return out


async def export_coco(
    items: list[ManifestItem], categories: list[Category], read_blob: ReadBlob
) -> AsyncIterator[bytes]:
    """A ZIP of ``images/[split/]`` and ``annotations/instances_<split|default>.json``."""
    cats = category_ids(categories, items)
    out, names = ZipOut(), ExportNames()
    placed: dict[str | None, list[tuple[ManifestItem, str, int | None, int | None]]] = {}
    for item in items:
        name = names.claim(item)
        folder = f"images/{item.split}" if item.split else "images"
        measure = item.width is None or item.height is None
        async for chunk in out.add_blob(f"{folder}/{name}", item, read_blob, measure=measure):
            yield chunk
        width, height = (
            (item.width, item.height) if not measure else (out.last_size or (None, None))
        )
        placed.setdefault(item.split, []).append((item, name, width, height))
    for split, group in placed.items():
        arcname = f"annotations/instances_{split or 'default'}.json"
        for chunk in out.add_text(arcname, _coco_json(group, cats)):
            yield chunk
    yield out.close()


def _coco_json(
    group: list[tuple[ManifestItem, str, int | None, int | None]], cats: list[Category]
) -> Iterator[bytes]:
    cat_id = {c.name: c.id for c in cats}
    head = {
        "info": {"description": "Exported by Kiln"},
        "licenses": [],
        "categories": [
            {"id": c.id, "name": c.name, "supercategory": c.supercategory or ""} for c in cats
        ],
    }
    yield json.dumps(head)[:-1].encode() + b', "images": ['
    image_ids = _unique_ids([item.metadata.get(IMAGE_ID) for item, *_ in group])
    for i, ((_, name, width, height), image_id) in enumerate(zip(group, image_ids, strict=True)):
        record = {"id": image_id, "file_name": name, "width": width, "height": height}
        yield (b", " if i else b"") + json.dumps(record).encode()
    yield b'], "annotations": ['
    anns = [
        (image_id, ann)
        for (item, *_), image_id in zip(group, image_ids, strict=True)
        for ann in coco_annotations(item, cat_id)
    ]
    ann_ids = _unique_ids([ann.pop("id", None) for _, ann in anns])
    for i, ((image_id, ann), ann_id) in enumerate(zip(anns, ann_ids, strict=True)):
        record = {"id": ann_id, "image_id": image_id, **ann}
        yield (b", " if i else b"") + json.dumps(record).encode()
    yield b"]}"


def _unique_ids(wanted: list[Any]) -> list[int]:
    """Keep each wanted integer id unless taken; give the rest fresh ids above the maximum."""
    ids: list[int | None] = []
    taken: set[int] = set()
    for value in wanted:
        ok = isinstance(value, int) and not isinstance(value, bool) and value not in taken
        ids.append(value if ok else None)
        if ok:
            taken.add(value)
    next_id = max(taken, default=0) + 1
    out = []
    for value in ids:
        if value is None:
            value = next_id
            next_id += 1
        out.append(value)
    return out


def coco_annotations(item: ManifestItem, cat_id: dict[str, int]) -> list[dict[str, Any]]:
    """The COCO annotation records of one item (without ``image_id``; ``id`` when it had one)."""
    keypoints: dict[tuple[Any, str], KeypointsLabel] = {}
    for label in item.labels:
        if isinstance(label, KeypointsLabel) and ANNOTATION_ID in label.attributes:
            keypoints.setdefault((label.attributes[ANNOTATION_ID], label.label), label)
    # Keypoints that shared an annotation with a shape go back into that annotation.
    merge: dict[int, KeypointsLabel] = {}
    for label in item.labels:
        key = (label.attributes.get(ANNOTATION_ID), label.label)
        kp = keypoints.pop(key, None) if not isinstance(label, KeypointsLabel) else None
        if kp is not None:
            merge[id(label)] = kp
    merged = {id(kp) for kp in merge.values()}
    out = []
    for label in item.labels:
        if label.label not in cat_id or id(label) in merged:
            continue
        ann = _annotation(label, cat_id[label.label])
        if ann is None:
            continue
        if (kp := merge.get(id(label))) is not None:
            ann["keypoints"] = kp.keypoints
            ann["num_keypoints"] = sum(1 for v in kp.keypoints[2::3] if v > 0)
        out.append(ann)
    return out


def _annotation(label: Label, category_id: int) -> dict[str, Any] | None:
    ann: dict[str, Any] = {"category_id": category_id}
    attributes = dict(label.attributes)
    if ANNOTATION_ID in attributes:
        ann["id"] = attributes.pop(ANNOTATION_ID)
    if isinstance(label, BoxLabel):
        ann |= {"bbox": label.bbox, "area": _area(label.area, label.bbox[2] * label.bbox[3])}
        ann |= {"segmentation": [], "iscrowd": int(label.iscrowd)}
    elif isinstance(label, PolygonLabel):
        bbox = label.bbox or polygon_bbox(label.polygons)
        area = sum(shoelace(ring) for ring in label.polygons)
        ann |= {"bbox": bbox, "area": _area(label.area, area), "segmentation": label.polygons}
        ann["iscrowd"] = int(label.iscrowd)
    elif isinstance(label, MaskLabel):
        rle = compressed_rle(label.rle)
        bbox = label.bbox or [float(v) for v in mask_utils.toBbox(rle)]
        area = _area(label.area, float(mask_utils.area(rle)))
        ann |= {"bbox": bbox, "area": area, "segmentation": label.rle.model_dump()}
        ann["iscrowd"] = int(label.iscrowd)
    elif isinstance(label, KeypointsLabel):
        bbox = label.bbox or _keypoints_bbox(label.keypoints)
        ann |= {"bbox": bbox, "area": bbox[2] * bbox[3], "segmentation": [], "iscrowd": 0}
        ann["keypoints"] = label.keypoints
        ann["num_keypoints"] = sum(1 for v in label.keypoints[2::3] if v > 0)
    else:
        return None
    if label.score is not None:
        ann["score"] = label.score
    if attributes:
        ann["attributes"] = attributes
    return ann


def _area(stored: float | None, computed: float) -> float:
    return stored if stored is not None else float(computed)


def _keypoints_bbox(keypoints: list[float]) -> list[float]:
    points = [
        (x, y)
        for x, y, v in zip(keypoints[0::3], keypoints[1::3], keypoints[2::3], strict=False)
        if v > 0
    ]
    if not points:
        return [0.0, 0.0, 0.0, 0.0]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
