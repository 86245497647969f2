"""Tabular manifests: a CSV of ``file,label[,split]`` and JSON Lines of manifest items.

A JSON Lines line is a :class:`~kiln_core.manifest.ManifestItem` without ``blob``,
``size_bytes`` and ``media_type`` (they come from the bytes) plus a ``file`` key naming the
image; ``item_id`` is optional.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import PurePosixPath
from typing import Any

from kiln_core.manifest import Category, ClassLabel, ManifestItem, Split, dump_jsonl
from kiln_dataset.formats.common import (
    SPLIT_NAMES,
    DatasetFiles,
    ImportEntry,
    ImportResult,
    ItemProblem,
    ReadBlob,
    UnknownFormat,
    categories_from_names,
    make_label,
)
from kiln_dataset.formats.zipout import ExportNames, ZipOut

FILE_COLUMNS = ("file", "filename", "file_name", "image", "path")
LABEL_COLUMNS = ("label", "class", "category")
_FROM_BYTES = ("blob", "size_bytes", "media_type")


def csv_manifests(files: DatasetFiles) -> list[PurePosixPath]:
    return [p for p in files.with_suffix(".csv") if len(p.parts) <= 2 and _csv_columns(files, p)]


def jsonl_manifests(files: DatasetFiles) -> list[PurePosixPath]:
    return [p for p in files.with_suffix(".jsonl") if len(p.parts) <= 2]


def _csv_columns(files: DatasetFiles, path: PurePosixPath) -> tuple[str, str | None] | None:
    with open(files.disk(path), newline="", encoding="utf-8-sig", errors="replace") as f:
        header = [h.strip().lower() for h in next(csv.reader(f), [])]
    file_col = next((c for c in FILE_COLUMNS if c in header), None)
    label_col = next((c for c in LABEL_COLUMNS if c in header), None)
    return (file_col, label_col) if file_col else None


def import_csv(files: DatasetFiles) -> ImportResult:
    manifests = csv_manifests(files)
    if not manifests:
        raise UnknownFormat("no CSV with a file column found")
    result = ImportResult("csv", [], [])
    entries: dict[PurePosixPath | str, ImportEntry] = {}
    for path in manifests:
        columns = _csv_columns(files, path)
        assert columns is not None
        file_col, label_col = columns
        with open(files.disk(path), newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.DictReader(f)
            reader.fieldnames = [h.strip().lower() for h in reader.fieldnames or []]
            for row in reader:
                name = (row.get(file_col) or "").strip()
                if not name:
                    continue
                entry = _entry(files, path, name, entries)
                label = (row.get(label_col) or "").strip() if label_col else ""
                if label and label not in {lab.label for lab in entry.labels}:
                    entry.labels.append(make_label({"type": "class", "label": label[:200]}))
                _set_split(entry, row.get("split"))
    result.entries = list(entries.values())
    names = {label.label for e in result.entries for label in e.labels}
    result.categories = categories_from_names(names)
    return result


def _entry(
    files: DatasetFiles,
    manifest: PurePosixPath,
    name: str,
    entries: dict[PurePosixPath | str, ImportEntry],
) -> ImportEntry:
    rel = files.resolve(name, manifest.parent)
    key: PurePosixPath | str = rel if rel is not None else name
    if key not in entries:
        entries[key] = ImportEntry(
            path=files.disk(rel) if rel is not None else None,
            source_name=rel.as_posix() if rel is not None else name,
        )
        if rel is None:
            entries[key].problems.append(
                ItemProblem("missing-file", f"image file {name!r} is not in the upload")
            )
    return entries[key]


def _set_split(entry: ImportEntry, value: Any) -> None:
    text = str(value or "").strip().lower()
    if not text:
        return
    split: Split | None = SPLIT_NAMES.get(text)
    if split is None:
        entry.problems.append(ItemProblem("bad-split", f"unknown split {value!r}"))
    else:
        entry.split = split


def import_jsonl(files: DatasetFiles) -> ImportResult:
    manifests = jsonl_manifests(files)
    if not manifests:
        raise UnknownFormat("no JSON Lines manifest found")
    result = ImportResult("jsonl", [], [])
    entries: dict[PurePosixPath | str, ImportEntry] = {}
    for path in manifests:
        with open(files.disk(path), encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    _jsonl_line(files, path, number, line, entries, result)
    result.entries = list(entries.values())
    names = {label.label for e in result.entries for label in e.labels}
    result.categories = categories_from_names(names)
    return result


def _jsonl_line(
    files: DatasetFiles,
    manifest: PurePosixPath,
    number: int,
    line: str,
    entries: dict[PurePosixPath | str, ImportEntry],
    result: ImportResult,
) -> None:
    where = f"{manifest.as_posix()}:{number}"
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("a line must be a JSON object")
        name = record.get("file") or record.get("source_name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("no 'file' key")
    except ValueError as exc:
        result.problems.append(ItemProblem("bad-line", str(exc), where))
        return
    entry = _entry(files, manifest, name.strip(), entries)
    for number_in_item, raw in enumerate(record.get("labels") or [], 1):
        try:
            entry.labels.append(make_label(raw))
        except (ValueError, TypeError) as exc:
            entry.problems.append(ItemProblem("bad-annotation", f"label {number_in_item}: {exc}"))
    _set_split(entry, record.get("split"))
    if isinstance(record.get("metadata"), dict):
        entry.metadata.update(record["metadata"])
    for key in ("width", "height"):
        if isinstance(record.get(key), int):
            setattr(entry, key, record[key])
    if isinstance(record.get("item_id"), str) and record["item_id"]:
        entry.item_id = record["item_id"]
    ignored = set(record) - {
        "file",
        "source_name",
        "labels",
        "split",
        "metadata",
        "width",
        "height",
        "item_id",
        *_FROM_BYTES,
    }
    if ignored:
        entry.problems.append(ItemProblem("unknown-keys", f"ignored keys {sorted(ignored)}"))


async def export_jsonl(
    items: list[ManifestItem], categories: list[Category], read_blob: ReadBlob
) -> AsyncIterator[bytes]:
    """The manifest itself, one item per line (no image bytes)."""
    for line in dump_jsonl(items):
        yield line


async def export_csv(
    items: list[ManifestItem], categories: list[Category], read_blob: ReadBlob
) -> AsyncIterator[bytes]:
    """A ZIP of ``images/`` and ``labels.csv`` (``file,label,split``, a row per class label)."""
    zout, file_names = ZipOut(), ExportNames()
    rows: list[tuple[str, str, str]] = []
    for item in items:
        name = f"images/{file_names.claim(item)}"
        async for chunk in zout.add_blob(name, item, read_blob):
            yield chunk
        classes = [lab.label for lab in item.labels if isinstance(lab, ClassLabel)] or [""]
        rows += [(name, label, item.split or "") for label in classes]
    for chunk in zout.add_text("labels.csv", _csv_text(rows)):
        yield chunk
    yield zout.close()


def _csv_text(rows: list[tuple[str, str, str]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("file", "label", "split"))
    for row in rows:
        writer.writerow(row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
