"""Importers from on-disk dataset layouts to the unified manifest, and exporters back.

Import: :func:`detect_format` then :func:`import_dataset` on an extracted directory; both step
into a lone wrapper folder. Importers are blocking (disk, Pillow headers): run them in a thread.
Per-item problems are reported on each :class:`ImportEntry`, never raised.

Export: :func:`export_stream` yields the bytes of a ZIP (or of the JSON Lines manifest) as they
are produced, streaming image bytes from ``read_blob(sha256)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Literal

from kiln_core.manifest import Category, ManifestItem
from kiln_dataset.formats.coco import coco_files, export_coco, import_coco
from kiln_dataset.formats.common import (
    DatasetFiles,
    ImportEntry,
    ImportResult,
    ItemProblem,
    ReadBlob,
    UnknownFormat,
    dataset_root,
)
from kiln_dataset.formats.imagefolder import export_imagefolder, import_imagefolder
from kiln_dataset.formats.manifests import (
    csv_manifests,
    export_csv,
    export_jsonl,
    import_csv,
    import_jsonl,
    jsonl_manifests,
)
from kiln_dataset.formats.voc import export_voc, import_voc, voc_annotations
from kiln_dataset.formats.yolo import export_yolo, import_yolo, looks_like_yolo

ImportFormat = Literal["imagefolder", "coco", "yolo", "voc", "csv", "jsonl"]
ExportFormat = Literal["coco", "yolo", "voc", "imagefolder", "csv", "jsonl"]

IMPORTERS: dict[str, Callable[[DatasetFiles], ImportResult]] = {
    "coco": import_coco,
    "voc": import_voc,
    "yolo": import_yolo,
    "jsonl": import_jsonl,
    "csv": import_csv,
    "imagefolder": import_imagefolder,
}
EXPORTERS: dict[str, Callable[..., AsyncIterator[bytes]]] = {
    "coco": export_coco,
    "yolo": export_yolo,
    "voc": export_voc,
    "imagefolder": export_imagefolder,
    "csv": export_csv,
    "jsonl": export_jsonl,
}
# What each export is served as.
EXPORT_MEDIA_TYPES = {fmt: "application/zip" for fmt in EXPORTERS} | {
    "jsonl": "application/x-ndjson"
}

__all__ = [
    "EXPORTERS",
    "EXPORT_MEDIA_TYPES",
    "IMPORTERS",
    "ExportFormat",
    "ImportEntry",
    "ImportFormat",
    "ImportResult",
    "ItemProblem",
    "ReadBlob",
    "UnknownFormat",
    "detect_format",
    "export_stream",
    "import_dataset",
]


def detect_format(directory: Path) -> ImportFormat | None:
    """The layout of an extracted upload, most specific first; None when nothing fits."""
    return _detect(DatasetFiles(dataset_root(directory)))


def _detect(files: DatasetFiles) -> ImportFormat | None:
    if coco_files(files):
        return "coco"
    if voc_annotations(files):
        return "voc"
    if looks_like_yolo(files):
        return "yolo"
    if jsonl_manifests(files):
        return "jsonl"
    if csv_manifests(files):
        return "csv"
    if files.images():
        return "imagefolder"
    return None


def import_dataset(directory: Path, fmt: str | None = None) -> ImportResult:
    """Read an extracted upload in format ``fmt`` (detected when None).

    Raises :class:`UnknownFormat` when the format is unknown or the layout does not fit it.
    """
    files = DatasetFiles(dataset_root(directory))
    fmt = fmt or _detect(files)
    if fmt is None:
        raise UnknownFormat("no images or annotations in a layout Kiln can import")
    if fmt not in IMPORTERS:
        raise UnknownFormat(f"unknown import format {fmt!r}; known: {', '.join(IMPORTERS)}")
    result = IMPORTERS[fmt](files)
    result.problems += [
        ItemProblem("bad-name", "file name is not valid UTF-8; the file was skipped", name)
        for name in files.bad_names
    ]
    return result


def export_stream(
    fmt: str, items: list[ManifestItem], categories: list[Category], read_blob: ReadBlob
) -> AsyncIterator[bytes]:
    """The export of ``items`` in ``fmt`` as an async stream of bytes (ZIP, or JSON Lines)."""
    if fmt not in EXPORTERS:
        raise UnknownFormat(f"unknown export format {fmt!r}; known: {', '.join(EXPORTERS)}")
    return EXPORTERS[fmt](items, categories, read_blob)
