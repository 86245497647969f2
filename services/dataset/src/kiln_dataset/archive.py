"""Safe extraction of user-uploaded archives (zip, tar, tar.gz/bz2/xz).

Every member header is checked before a single byte is written, and the size and ratio limits
are enforced again while streaming because headers can lie. A compressed tar is checked as its
headers are read, and its decompressed stream is bounded, so a bomb is refused as soon as it
crosses a limit rather than after being decompressed once. A rejected archive leaves the
target directory empty. Blocking: call it from a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from kiln_core.errors import ValidationFailed

RejectionKind = Literal[
    "path-traversal",
    "absolute-path",
    "bad-name",
    "symlink",
    "hardlink",
    "special-file",
    "encrypted",
    "too-many-files",
    "too-large",
    "compression-ratio",
    "not-an-archive",
    "corrupt",
]

CHUNK = 1024 * 1024
# Junk that archivers on macOS and Windows add; skipped, never an error.
JUNK_DIRS = frozenset({"__MACOSX"})
JUNK_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_MAX_NAME_BYTES = 255
# How damaged archives surface, depending on the container and the compressor.
_DAMAGED = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    RuntimeError,
)


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int = 2 * 1024**3
    max_member_bytes: int = 256 * 1024**2
    max_members: int = 100_000
    max_ratio: float = 100.0
    # Tiny files compress absurdly well (a 20 KB blank label file) yet can hurt nobody.
    ratio_floor_bytes: int = 1024 * 1024


class ArchiveRejected(ValidationFailed, ValueError):
    """The whole archive is refused; ``kind`` is a stable slug, ``member`` the offending name."""

    type, title = "archive-rejected", "Archive rejected"

    def __init__(self, reason: str, member: str | None = None, *, kind: RejectionKind) -> None:
        where = f" ({member!r})" if member else ""
        # Explicit base: mypy cannot follow super() across the ValueError mix-in.
        ValidationFailed.__init__(self, f"{reason}{where}", kind=kind, member=member)
        self.kind: RejectionKind = kind
        self.reason = reason
        self.member = member


@dataclass
class _Member:
    name: str  # as stored in the archive, for messages
    path: PurePosixPath  # normalised, relative, safe
    is_dir: bool
    size: int  # declared uncompressed size
    compressed: int | None  # declared compressed size; None when the format has none (tar)
    open: Callable[[], IO[bytes]]


def sniff_archive(path: Path) -> Literal["zip", "tar", "gzip", "bzip2", "xz"] | None:
    """The container type from magic bytes (never from the file name)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def extract_archive(archive: Path, target: Path, limits: ArchiveLimits | None = None) -> list[str]:
    """Extract ``archive`` into the empty directory ``target``; return the files' relative paths.

    Raises :class:`ArchiveRejected` (and leaves ``target`` empty) when any member is unsafe or a
    limit is exceeded.
    """
    limits = limits or ArchiveLimits()
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise ValueError(f"extraction target {target} is not empty")
    kind = sniff_archive(archive)
    if kind is None:
        raise ArchiveRejected("not a zip or tar archive", kind="not-an-archive")
    archive_bytes = max(archive.stat().st_size, 1)
    try:
        with ExitStack() as stack:
            members = _members(archive, kind, limits, stack, archive_bytes)
            return _extract(members, target, limits, archive_bytes)
    except BaseException:
        # Disk errors propagate as they are, but never leave a partial extraction behind.
        _empty(target)
        raise


def _members(
    archive: Path, kind: str, limits: ArchiveLimits, stack: ExitStack, archive_bytes: int
) -> list[_Member]:
    try:
        if kind == "zip":
            zf = stack.enter_context(zipfile.ZipFile(archive))
            return list(_zip_members(zf, limits))
        opener = {"tar": open, "gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[kind]
        raw = stack.enter_context(opener(archive, "rb"))  # type: ignore[operator]
        stream = _BoundedStream(raw, limits, archive_bytes)
        try:
            tf = stack.enter_context(tarfile.open(fileobj=stream, mode="r:"))  # type: ignore[arg-type]
        except tarfile.ReadError as exc:
            # Opening reads the first header: a compressed stream that holds no tar fails here.
            reason = "compressed file is not a tar archive" if kind != "tar" else str(exc)
            raise ArchiveRejected(reason, kind="not-an-archive") from exc
        return list(_tar_members(tf, limits, archive_bytes))
    except _DAMAGED as exc:
        raise ArchiveRejected(f"archive is damaged: {exc}", kind="corrupt") from exc


class _BoundedStream(io.RawIOBase):
    """A tar's decompressed stream that refuses to go past what the limits allow.

    Reads (and forward seeks) go in chunks, each checked, so no header, padding or oversized
    long-name block can make it decompress more than the limits before it is refused.
    """

    def __init__(self, raw: IO[bytes], limits: ArchiveLimits, archive_bytes: int) -> None:
        super().__init__()
        self.raw = raw
        self.position = 0
        # Headers and padding take up to about 1 KiB per member beyond the members' own bytes.
        self.max_bytes = limits.max_total_bytes + 1024 * limits.max_members
        self.max_ratio_bytes = max(limits.ratio_floor_bytes, 2 * limits.max_ratio * archive_bytes)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        parts = []
        wanted = size if size is not None and size >= 0 else None
        while wanted is None or wanted > 0:
            chunk = self.raw.read(CHUNK if wanted is None else min(wanted, CHUNK))
            if not chunk:
                break
            self._advance(len(chunk))
            parts.append(chunk)
            if wanted is not None:
                wanted -= len(chunk)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self.position + offset}.get(whence)
        if target is None:
            raise OSError("a tar stream cannot seek from its end")
        if target < self.position:
            self.raw.seek(target)  # backwards: re-reads what was already checked
            self.position = target
        while self.position < target:
            if not self.read(min(CHUNK, target - self.position)):
                break
        return self.position

    def _advance(self, count: int) -> None:
        self.position += count
        if self.position > self.max_bytes:
            raise ArchiveRejected("archive expands past the total size limit", kind="too-large")
        if self.position > self.max_ratio_bytes:
            raise ArchiveRejected(
                "archive expands past the compression ratio limit", kind="compression-ratio"
            )


def _chunks(m: _Member) -> Iterator[bytes]:
    """A member's bytes; a damaged stream is a rejection, unlike a failure to write."""
    try:
        with m.open() as src:
            while chunk := src.read(CHUNK):
                yield chunk
    except _DAMAGED as exc:
        raise ArchiveRejected(f"member is damaged: {exc}", m.name, kind="corrupt") from exc


def is_junk(path: PurePosixPath) -> bool:
    """Whether a member is operating-system litter (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``)."""
    return (
        any(part in JUNK_DIRS for part in path.parts)
        or path.name in JUNK_FILES
        or path.name.startswith("._")
    )


def _zip_members(zf: zipfile.ZipFile, limits: ArchiveLimits) -> Iterator[_Member]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise ArchiveRejected(
            f"archive has {len(infos)} members, over {limits.max_members}", kind="too-many-files"
        )
    for info in infos:
        path = _safe_path(info.filename)
        mode = info.external_attr >> 16
        file_type = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            raise ArchiveRejected("symbolic links are not allowed", info.filename, kind="symlink")
        if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveRejected(
                "only files and folders are allowed", info.filename, kind="special-file"
            )
        if info.flag_bits & 0x1:
            raise ArchiveRejected(
                "encrypted archives are not supported", info.filename, kind="encrypted"
            )
        if info.compress_type not in _ZIP_METHODS:
            raise ArchiveRejected(
                f"unsupported compression method {info.compress_type}",
                info.filename,
                kind="corrupt",
            )
        yield _Member(
            name=info.filename,
            path=path,
            is_dir=info.is_dir() or file_type == stat.S_IFDIR,
            size=info.file_size,
            compressed=info.compress_size,
            open=lambda info=info: zf.open(info),  # type: ignore[misc]
        )


def _tar_members(
    tf: tarfile.TarFile, limits: ArchiveLimits, archive_bytes: int
) -> Iterator[_Member]:
    count = total = 0
    # next() rather than getmembers() so a tar of a million headers stops at the limit.
    while (info := tf.next()) is not None:
        count += 1
        if count > limits.max_members:
            raise ArchiveRejected(
                f"archive has more than {limits.max_members} members", kind="too-many-files"
            )
        path = _safe_path(info.name)
        if info.issym():
            raise ArchiveRejected("symbolic links are not allowed", info.name, kind="symlink")
        if info.islnk():
            raise ArchiveRejected("hard links are not allowed", info.name, kind="hardlink")
        if not (info.isreg() or info.isdir()):
            raise ArchiveRejected(
                "only files and folders are allowed", info.name, kind="special-file"
            )
        # Checked at each header, before the member's bytes are read past (a tar has no index).
        total += info.size
        _check_declared(info.name, info.size, total, limits, archive_bytes)
        yield _Member(
            name=info.name,
            path=path,
            is_dir=info.isdir(),
            size=info.size,
            compressed=None,
            open=lambda info=info: _tar_open(tf, info),  # type: ignore[misc]
        )


def _tar_open(tf: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    f = tf.extractfile(info)
    if f is None:  # only for non-regular members, which were refused above
        raise ArchiveRejected("only files and folders are allowed", info.name, kind="special-file")
    return f


def _safe_path(name: str) -> PurePosixPath:
    # Windows archivers write backslashes; treat them as separators, never as name characters.
    text = name.replace("\\", "/")
    if "\x00" in text:
        raise ArchiveRejected("member name contains a NUL byte", name, kind="bad-name")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise ArchiveRejected("absolute paths are not allowed", name, kind="absolute-path")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveRejected("'..' in a member path is not allowed", name, kind="path-traversal")
    if any(len(p.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES for p in parts):
        raise ArchiveRejected("a path component is longer than 255 bytes", name, kind="bad-name")
    return PurePosixPath(*parts)


def _check_declared(
    name: str, size: int, total: int, limits: ArchiveLimits, archive_bytes: int
) -> None:
    if size > limits.max_member_bytes:
        raise ArchiveRejected(
            f"member is {size} bytes, over the {limits.max_member_bytes} byte limit",
            name,
            kind="too-large",
        )
    if total > limits.max_total_bytes:
        raise ArchiveRejected(
            f"archive expands to over {limits.max_total_bytes} bytes", name, kind="too-large"
        )
    if _ratio_exceeded(total, archive_bytes, limits):
        raise ArchiveRejected(
            f"archive expands over {limits.max_ratio:g}x", name, kind="compression-ratio"
        )


def _plan(members: list[_Member], limits: ArchiveLimits, archive_bytes: int) -> list[_Member]:
    """Check sizes and paths of all members; return the files to write, last duplicate wins."""
    total = 0
    files: dict[PurePosixPath, _Member] = {}
    dirs: set[PurePosixPath] = set()
    for m in members:
        if m.path == PurePosixPath() or is_junk(m.path):
            continue
        if m.is_dir:
            dirs.add(m.path)
            continue
        # Ratio first: for a bomb it is the truer reason than its size.
        if m.compressed is not None and _ratio_exceeded(m.size, m.compressed, limits):
            raise ArchiveRejected(
                f"member expands {m.size / max(m.compressed, 1):.0f}x, over {limits.max_ratio:g}x",
                m.name,
                kind="compression-ratio",
            )
        if m.size > limits.max_member_bytes:
            raise ArchiveRejected(
                f"member is {m.size} bytes, over the {limits.max_member_bytes} byte limit",
                m.name,
                kind="too-large",
            )
        previous = files.pop(m.path, None)
        total += m.size - (previous.size if previous else 0)
        files[m.path] = m
        dirs.update(m.path.parents)
    if total > limits.max_total_bytes:
        raise ArchiveRejected(
            f"archive expands to {total} bytes, over {limits.max_total_bytes}", kind="too-large"
        )
    if _ratio_exceeded(total, archive_bytes, limits):
        raise ArchiveRejected(
            f"archive expands {total / archive_bytes:.0f}x, over {limits.max_ratio:g}x",
            kind="compression-ratio",
        )
    for path in files:
        if path in dirs:
            raise ArchiveRejected("a path is both a file and a folder", str(path), kind="bad-name")
    return list(files.values())


def _ratio_exceeded(size: int, compressed: int, limits: ArchiveLimits) -> bool:
    return size > limits.ratio_floor_bytes and size > limits.max_ratio * max(compressed, 1)


def _extract(
    members: list[_Member], target: Path, limits: ArchiveLimits, archive_bytes: int
) -> list[str]:
    files = _plan(members, limits, archive_bytes)
    root = target.resolve()
    written_total = 0
    extracted: list[str] = []
    for m in files:
        dest = root.joinpath(*m.path.parts)
        if not dest.parent.resolve().is_relative_to(root):  # belt and braces after _safe_path
            raise ArchiveRejected("member escapes the target folder", m.name, kind="path-traversal")
        dest.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with open(dest, "xb") as out:
            for chunk in _chunks(m):
                written += len(chunk)
                written_total += len(chunk)
                _check_streaming(m, written, written_total, limits, archive_bytes)
                out.write(chunk)
        extracted.append(m.path.as_posix())
    return extracted


def _check_streaming(
    m: _Member, written: int, total: int, limits: ArchiveLimits, archive_bytes: int
) -> None:
    if written > m.size:
        raise ArchiveRejected("member is larger than its header says", m.name, kind="corrupt")
    if written > limits.max_member_bytes:
        raise ArchiveRejected("member exceeds the size limit", m.name, kind="too-large")
    if total > limits.max_total_bytes:
        raise ArchiveRejected("archive exceeds the total size limit", m.name, kind="too-large")
    if m.compressed is not None and _ratio_exceeded(written, m.compressed, limits):
        raise ArchiveRejected("member exceeds the ratio limit", m.name, kind="compression-ratio")
    if _ratio_exceeded(total, archive_bytes, limits):
        raise ArchiveRejected("archive exceeds the ratio limit", m.name, kind="compression-ratio")


def _empty(target: Path) -> None:
    # The target was empty on entry, so everything in it is ours to remove.
    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
