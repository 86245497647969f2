"""Pascal VOC: ``Annotations/*.xml``, ``JPEGImages/`` and optional ``ImageSets/Main/*.txt`` splits.

VOC numbers pixels from 1 and its ``xmax``/``ymax`` are inclusive (as the devkit reads them), while
the manifest's boxes are COCO's continuous ``[x, y, w, h]`` from 0: an import takes
``x = xmin - 1``, ``width = xmax - xmin + 1``, an export writes the reverse, so an import then
export gives the file back unchanged. ``difficult``, ``truncated``, ``occluded`` and ``pose``
become label attributes. Annotation files are parsed by ``defusedxml``, which refuses DTDs
and entity declarations in any encoding.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from kiln_core.manifest import BoxLabel, Category, ManifestItem, Split
from kiln_dataset.formats.common import (
    DatasetFiles,
    ImportEntry,
    ImportResult,
    ItemProblem,
    ReadBlob,
    UnknownFormat,
    categories_from_names,
    make_label,
    shape_bbox,
    split_of,
)
from kiln_dataset.formats.zipout import ExportNames, ZipOut

FLAGS = ("difficult", "truncated", "occluded")
_LIST_SPLITS: dict[str, Split] = {"train": "train", "val": "val", "test": "test"}


def voc_annotations(files: DatasetFiles) -> list[PurePosixPath]:
    return [
        p
        for p in files.with_suffix(".xml")
        if len(p.parts) <= 3 and p.parent.name.lower() == "annotations"
    ]


def import_voc(files: DatasetFiles) -> ImportResult:
    xmls = voc_annotations(files)
    if not xmls:
        raise UnknownFormat("no Annotations/*.xml found")
    result = ImportResult(format="voc", categories=[], entries=[])
    splits = _split_lists(files)
    seen: set[PurePosixPath] = set()
    for xml_path in xmls:
        entry = _import_xml(files, xml_path, result)
        if entry is None:
            continue
        entry.split = splits.get(xml_path.stem) or split_of(xml_path)
        if entry.path is not None:
            seen.add(PurePosixPath(entry.source_name))
        result.entries.append(entry)
    # Images with no annotation file are unlabelled items, not errors.
    for xml_root in {p.parent.parent for p in xmls}:
        for image in files.images(xml_root / "JPEGImages"):
            if image not in seen:
                split = splits.get(image.stem) or split_of(image.relative_to(xml_root))
                entry = ImportEntry(files.disk(image), image.as_posix(), split=split)
                result.entries.append(entry)
    names = {label.label for e in result.entries for label in e.labels}
    result.categories = categories_from_names(names)
    return result


def _import_xml(
    files: DatasetFiles, xml_path: PurePosixPath, result: ImportResult
) -> ImportEntry | None:
    data = files.disk(xml_path).read_bytes()
    try:
        # VOC files never declare a DTD; refusing any rules out entity-expansion attacks,
        # whatever the encoding the declaration is written in.
        root = SafeET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException:
        result.problems.append(
            ItemProblem("bad-annotation", "XML with a DOCTYPE is not allowed", xml_path.as_posix())
        )
        return None
    except (ET.ParseError, ValueError) as exc:  # ValueError: an encoding expat cannot read
        result.problems.append(ItemProblem("bad-annotation", str(exc), xml_path.as_posix()))
        return None
    filename = (root.findtext("filename") or "").strip()
    image = _find_image(files, xml_path, filename)
    entry = ImportEntry(
        path=files.disk(image) if image else None,
        source_name=image.as_posix() if image else filename or xml_path.stem,
        width=_int(root.findtext("size/width")),
        height=_int(root.findtext("size/height")),
    )
    if image is None:
        entry.problems.append(
            ItemProblem("missing-file", f"image {filename or xml_path.stem!r} is not in the upload")
        )
    for number, obj in enumerate(root.iter("object"), 1):
        try:
            entry.labels.append(_box(obj))
        except ValueError as exc:
            entry.problems.append(ItemProblem("bad-annotation", f"object {number}: {exc}"))
    return entry


def _box(obj: Any) -> BoxLabel:
    name = (obj.findtext("name") or "").strip()
    box = obj.find("bndbox")
    if box is None:
        raise ValueError("no bndbox")
    try:
        x0, y0, x1, y1 = (float(box.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        raise ValueError("bndbox needs numeric xmin, ymin, xmax, ymax") from None
    attributes: dict[str, Any] = {}
    for flag in FLAGS:
        value = obj.findtext(flag)
        if value is not None and value.strip():
            attributes[flag] = value.strip() not in ("0", "false", "False")
    pose = (obj.findtext("pose") or "").strip()
    if pose and pose != "Unspecified":
        attributes["pose"] = pose
    label = make_label(
        {
            "type": "box",
            "label": name,
            # 1-based inclusive pixels to 0-based continuous coordinates.
            "bbox": [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1],
            "attributes": attributes,
        }
    )
    assert isinstance(label, BoxLabel)
    return label


def _find_image(
    files: DatasetFiles, xml_path: PurePosixPath, filename: str
) -> PurePosixPath | None:
    image_dir = xml_path.parent.parent / "JPEGImages"
    if filename:
        found = files.resolve(filename, image_dir)
        if found is not None:
            return found
    # The <filename> is often stale or lacks an extension; fall back to the XML's stem.
    for image in files.images(image_dir):
        if image.stem == xml_path.stem:
            return image
    return None


def _split_lists(files: DatasetFiles) -> dict[str, Split]:
    """Image stems to split from ``ImageSets/Main/{train,val,test,trainval}.txt``."""
    splits: dict[str, Split] = {}
    lists = {
        p.stem.lower(): p
        for p in files.with_suffix(".txt")
        if [part.lower() for part in p.parts[-3:-1]] == ["imagesets", "main"]
    }
    for name in ("trainval", "train", "val", "test"):
        if name not in lists or (name == "trainval" and ("train" in lists or "val" in lists)):
            continue
        split = _LIST_SPLITS.get(name, "train")  # trainval, used only without train/val lists
        for line in files.disk(lists[name]).read_text(errors="replace").splitlines():
            if line.split():
                splits[line.split()[0]] = split
    return splits


def _int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


# --- export ---------------------------------------------------------------------------------


async def export_voc(
    items: list[ManifestItem], categories: list[Category], read_blob: ReadBlob
) -> AsyncIterator[bytes]:
    """A ZIP of ``JPEGImages/``, ``Annotations/`` and ``ImageSets/Main/<split>.txt``.

    VOC holds boxes only: polygons and masks are written as their bounding boxes.
    """
    zout, file_names = ZipOut(), ExportNames()
    lists: dict[str, list[str]] = {}
    for item in items:
        name = file_names.claim(item)
        measure = item.width is None or item.height is None
        async for chunk in zout.add_blob(f"JPEGImages/{name}", item, read_blob, measure=measure):
            yield chunk
        size = zout.last_size if measure else (item.width, item.height)
        stem = PurePosixPath(name).stem
        for chunk in zout.add_text(f"Annotations/{stem}.xml", [voc_xml(item, name, size)]):
            yield chunk
        if item.split:
            lists.setdefault(item.split, []).append(stem)
    if "train" in lists and "val" in lists:
        lists["trainval"] = lists["train"] + lists["val"]
    for split, stems in lists.items():
        text = "".join(f"{s}\n" for s in stems).encode()
        for chunk in zout.add_text(f"ImageSets/Main/{split}.txt", [text]):
            yield chunk
    yield zout.close()


def voc_xml(item: ManifestItem, filename: str, size: tuple[Any, Any] | None) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    size_el = ET.SubElement(root, "size")
    width, height = size or (None, None)
    ET.SubElement(size_el, "width").text = str(width or 0)
    ET.SubElement(size_el, "height").text = str(height or 0)
    ET.SubElement(size_el, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for label in item.labels:
        bbox = shape_bbox(label)
        if bbox is None:
            continue
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = label.label
        ET.SubElement(obj, "pose").text = str(label.attributes.get("pose", "Unspecified"))
        for flag in FLAGS:
            ET.SubElement(obj, flag).text = str(int(bool(label.attributes.get(flag, False))))
        box = ET.SubElement(obj, "bndbox")
        x, y, w, h = bbox
        # Back to VOC's 1-based inclusive pixels.
        for key, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, key).text = _num(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


def _num(value: float) -> str:
    # Most VOC readers parse integers; keep fractions only where there are some.
    return str(int(value)) if float(value).is_integer() else format(value, ".10g")
