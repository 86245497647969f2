"""ImageFolder (torchvision): one folder per class, optionally inside ``train/ val/ test/``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import PurePosixPath

from kiln_core.manifest import Category, ClassLabel, ManifestItem, Split
from kiln_dataset.formats.common import (
    SPLIT_NAMES,
    DatasetFiles,
    ImportEntry,
    ImportResult,
    ReadBlob,
    UnknownFormat,
    categories_from_names,
    make_label,
)
from kiln_dataset.formats.zipout import ExportNames, ZipOut


def import_imagefolder(files: DatasetFiles) -> ImportResult:
    images = files.images()
    if not images:
        raise UnknownFormat("no images found")
    tops = {p.parts[0] for p in images if len(p.parts) > 1}
    by_split = bool(tops) and all(t.lower() in SPLIT_NAMES for t in tops)
    entries = []
    for image in images:
        parts = image.parts[:-1]
        split: Split | None = None
        if by_split and parts:
            split, parts = SPLIT_NAMES[parts[0].lower()], parts[1:]
        entry = ImportEntry(files.disk(image), image.as_posix(), split=split)
        if parts:
            # Sub-folders below a class folder still belong to that class.
            entry.labels.append(make_label({"type": "class", "label": parts[0]}))
        entries.append(entry)
    names = {label.label for e in entries for label in e.labels}
    return ImportResult("imagefolder", categories_from_names(names), entries)


async def export_imagefolder(
    items: list[ManifestItem], categories: list[Category], read_blob: ReadBlob
) -> AsyncIterator[bytes]:
    """A ZIP of ``[split/]class/image``; an item's first class label picks its folder.

    Items without a class label go to the split's top folder, which ImageFolder readers skip.
    """
    zout, file_names = ZipOut(), ExportNames()
    for item in items:
        folder = PurePosixPath(item.split or "")
        label = next((lab for lab in item.labels if isinstance(lab, ClassLabel)), None)
        if label is not None:
            folder /= _folder_name(label.label)
        arcname = (folder / file_names.claim(item)).as_posix()
        async for chunk in zout.add_blob(arcname, item, read_blob):
            yield chunk
    yield zout.close()


def _folder_name(name: str) -> str:
    cleaned = "".join("_" if c in '/\\:*?"<>|' or ord(c) < 32 else c for c in name).strip(". ")
    return cleaned or "_"
