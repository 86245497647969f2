"""A ZIP written incrementally to an async byte stream, and the file names placed in it."""

from __future__ import annotations

import os
import re
import time
import zipfile
from collections.abc import AsyncIterator, Iterable, Iterator

from kiln_core.manifest import ManifestItem
from kiln_dataset.formats.common import ReadBlob
from kiln_dataset.media import IMAGE_EXTENSIONS, PREFERRED_EXTENSION, UnreadableImage, image_size

OUT_CHUNK = 256 * 1024
# Enough of an image's start for its header, past EXIF and ICC blocks in JPEGs.
HEAD_BYTES = 256 * 1024
_UNSAFE = re.compile(r"[\x00-\x1f<>:\"|?*\\/\s]+")


class _Sink:
    """A write-only, non-seekable file, so zipfile streams with data descriptors."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes, /) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class ZipOut:
    """Members are added one at a time; each method yields the archive bytes produced so far."""

    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", zipfile.ZIP_DEFLATED)
        self._date = time.localtime()[:6]
        self.last_size: tuple[int, int] | None = None

    def _take(self, at_least: int = 1) -> bytes:
        buffer = self._sink.buffer
        if len(buffer) < at_least:
            return b""
        data = bytes(buffer)
        buffer.clear()
        return data

    async def add_blob(
        self, arcname: str, item: ManifestItem, read_blob: ReadBlob, *, measure: bool = False
    ) -> AsyncIterator[bytes]:
        """Copy an item's bytes in; with ``measure`` set ``last_size`` from the image header."""
        info = zipfile.ZipInfo(arcname, self._date)
        info.compress_type = zipfile.ZIP_STORED  # images are compressed already
        info.file_size = item.size_bytes  # lets zipfile choose ZIP64 up front
        head = bytearray()
        with self._zip.open(info, "w") as dst:
            async for chunk in read_blob(item.blob):
                dst.write(chunk)
                if measure and len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                if data := self._take(OUT_CHUNK):
                    yield data
        self.last_size = None
        if measure:
            try:
                self.last_size = image_size(bytes(head))
            except UnreadableImage:
                pass
        if data := self._take():
            yield data

    def add_text(self, arcname: str, pieces: Iterable[bytes]) -> Iterator[bytes]:
        info = zipfile.ZipInfo(arcname, self._date)
        info.compress_type = zipfile.ZIP_DEFLATED
        with self._zip.open(info, "w") as dst:
            for piece in pieces:
                dst.write(piece)
                if data := self._take(OUT_CHUNK):
                    yield data
        if data := self._take():
            yield data

    def close(self) -> bytes:
        self._zip.close()
        return self._take()


class ExportNames:
    """Safe, unique file names; unique by stem so ``a.jpg`` and ``a.png`` get distinct labels."""

    def __init__(self) -> None:
        self._stems: set[str] = set()

    def claim(self, item: ManifestItem) -> str:
        # The last path segment without building a path ("." and ".." strip to "" below).
        base = item.source_name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        name = _UNSAFE.sub("_", base)
        name = name.lstrip("._")[-150:]
        stem, suffix = os.path.splitext(name)
        if suffix.lower() not in IMAGE_EXTENSIONS:
            stem, suffix = name, PREFERRED_EXTENSION.get(item.media_type, suffix)
        if not stem:
            stem = _UNSAFE.sub("_", item.item_id).lstrip("._")[-150:] or "item"
        candidate, n = stem, 0
        while candidate.lower() in self._stems:
            n += 1
            candidate = f"{stem}_{n}"
        self._stems.add(candidate.lower())
        return candidate + suffix
