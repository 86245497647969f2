"""Object storage: the S3 API (MinIO client) or a local directory, chosen by URL scheme.

Blobs are content-addressed by SHA-256 (``blobs/sha256/ab/cdef…``): the same bytes are stored
once. Writes are spooled through a temporary file while hashing and reads are streamed, so no
large object is ever held in memory whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

from kiln_core.errors import PayloadTooLarge

CHUNK = 1024 * 1024
Source = bytes | BinaryIO | AsyncIterable[bytes] | Iterable[bytes]


def blob_key(sha256: str) -> str:
    return f"blobs/sha256/{sha256[:2]}/{sha256[2:]}"


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int
    key: str
    created: bool  # False when identical bytes were already stored


@dataclass(frozen=True)
class SpooledBlob:
    path: str  # the temporary file, or "" when the bytes are held in ``data``
    sha256: str
    size: int
    data: bytes | None = None


SMALL_BLOB = 4 * 1024 * 1024  # below this, bytes already in memory are not spooled to disk


class ObjectStore(ABC):
    url: str

    async def put_blob(self, source: Source, *, max_bytes: int | None = None) -> BlobRef:
        """Store bytes under their SHA-256; a second put of the same bytes stores nothing."""
        return await self.put_spooled(await self.spool(source, max_bytes=max_bytes))

    async def spool(self, source: Source, *, max_bytes: int | None = None) -> SpooledBlob:
        """First half of :meth:`put_blob`: hash to a temporary file (or, for small bytes
        already in memory, keep them there), so the caller can record the hash (e.g. protect
        it from a purge) before the bytes land."""
        if isinstance(source, bytes | bytearray) and len(source) <= SMALL_BLOB:
            if max_bytes is not None and len(source) > max_bytes:
                raise PayloadTooLarge(f"object exceeds the limit of {max_bytes} bytes")
            data = bytes(source)
            return SpooledBlob(
                path="", sha256=hashlib.sha256(data).hexdigest(), size=len(data), data=data
            )
        path, sha, size = await _spool(source, max_bytes=max_bytes)
        return SpooledBlob(path=path, sha256=sha, size=size)

    async def adopt_file(self, path: str) -> SpooledBlob:
        """Like :meth:`spool` for a file already on local disk: hashed in place, no copy. The
        blob takes the file over (:meth:`put_spooled` removes it)."""
        sha, size = await asyncio.to_thread(_hash_file, path)
        return SpooledBlob(path=path, sha256=sha, size=size)

    async def put_spooled(
        self, spooled: SpooledBlob, *, skip_exists_check: bool = False
    ) -> BlobRef:
        """Second half of :meth:`put_blob`; removes the temporary file. With
        ``skip_exists_check`` the bytes are written without asking first (one round trip
        instead of two when the caller knows they are most likely new)."""
        try:
            key = blob_key(spooled.sha256)
            created = False
            if skip_exists_check or not await self.exists(key):
                if spooled.data is not None:
                    await self._put_bytes(key, spooled.data)
                else:
                    await self._put_file(key, spooled.path, spooled.size)
                created = True
            return BlobRef(sha256=spooled.sha256, size=spooled.size, key=key, created=created)
        finally:
            if spooled.path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(spooled.path)

    async def put_spooled_many(
        self, blobs: Iterable[SpooledBlob], *, concurrency: int = 16
    ) -> None:
        """Write many spooled blobs without asking first whether they exist (the caller knows
        they are most likely new); removes their temporary files. Stores may batch them."""
        limit = asyncio.Semaphore(concurrency)

        async def put(spooled: SpooledBlob) -> None:
            async with limit:
                await self.put_spooled(spooled, skip_exists_check=True)

        await asyncio.gather(*(put(spooled) for spooled in blobs))

    async def _put_bytes(self, key: str, data: bytes) -> None:
        """Small objects already in memory; stores may override to skip the temp file."""
        fd, path = tempfile.mkstemp(prefix="kiln-small-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            await self._put_file(key, path, len(data))
        finally:
            os.unlink(path)

    async def put(self, key: str, source: Source) -> int:
        """Store bytes under ``key`` (replacing); returns the size."""
        spool, _sha, size = await _spool(source)
        try:
            await self._put_file(key, spool, size)
            return size
        finally:
            os.unlink(spool)

    async def read_bytes(self, key: str) -> bytes:
        """Whole object in memory: for small objects such as manifests only."""
        return b"".join([chunk async for chunk in self.stream(key)])

    async def read_many(self, keys: Sequence[str], concurrency: int = 16) -> dict[str, bytes]:
        """Several small objects at once, by key; a missing one is left out."""
        gate = asyncio.Semaphore(concurrency)
        out: dict[str, bytes] = {}

        async def one(key: str) -> None:
            async with gate:
                with contextlib.suppress(ObjectNotFound):
                    out[key] = await self.read_bytes(key)

        await asyncio.gather(*(one(k) for k in dict.fromkeys(keys)))
        return out

    @abstractmethod
    def uri(self, key: str) -> str:
        """A credential-free URI naming ``key`` (for events and humans)."""

    @abstractmethod
    async def _put_file(self, key: str, path: str, size: int) -> None: ...

    @abstractmethod
    def stream(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def size(self, key: str) -> int: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def list(self, prefix: str = "") -> list[str]: ...

    @abstractmethod
    async def check(self) -> None:
        """Raise if the store is unreachable (``/readyz``)."""


class ObjectNotFound(KeyError):
    pass


async def _spool(source: Source, *, max_bytes: int | None = None) -> tuple[str, str, int]:
    """Copy ``source`` to a temporary file, hashing as it goes."""
    digest = hashlib.sha256()
    size = 0
    fd, path = tempfile.mkstemp(prefix="kiln-spool-")
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in _chunks(source):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise PayloadTooLarge(f"object exceeds the limit of {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    return path, digest.hexdigest(), size


def _hash_file(path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


async def _chunks(source: Source) -> AsyncIterator[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        for i in range(0, len(data), CHUNK):
            yield data[i : i + CHUNK]
    elif hasattr(source, "read"):
        while chunk := await asyncio.to_thread(source.read, CHUNK):  # type: ignore[union-attr]
            yield chunk
    elif hasattr(source, "__aiter__"):
        async for chunk in source:  # type: ignore[union-attr]
            yield chunk
    else:
        for chunk in source:  # type: ignore[union-attr]
            yield chunk


def _open_first(path: Path, key: str, size: int) -> tuple[bytes, BinaryIO | None]:
    """The first ``size`` bytes of a file and, if it has more, the file open after them."""
    if not path.is_file():
        raise ObjectNotFound(key)
    f = path.open("rb")
    try:
        first = f.read(size)
    except BaseException:
        f.close()
        raise
    if len(first) < size:
        f.close()
        return first, None
    return first, f


class LocalStore(ObjectStore):
    """``file:///abs/dir`` — objects are files; writes land by atomic rename."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = Path(unquote(url.split("://", 1)[1])).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def uri(self, key: str) -> str:
        return f"file://{self.root}/{key}"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if key and "\x00" not in key and "\\" not in key and "" not in parts:
            if not any(p in (".", "..") for p in parts):
                # A plain relative key (every blob's) cannot leave the root: no resolve(),
                # whose lstat per path component cost more than reading a small blob.
                return self.root.joinpath(*parts)
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"object key escapes the store: {key!r}")
        return path

    async def _put_file(self, key: str, path: str, size: int) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        await asyncio.to_thread(shutil.copyfile, path, tmp)
        os.replace(tmp, target)

    async def stream(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        # Opening and the first read share one thread hop, and a file that fits in it needs
        # no other: an export of small images was two hops per blob.
        first, rest = await asyncio.to_thread(_open_first, self._path(key), key, chunk_size)
        if first:
            yield first
        if rest is None:
            return
        with rest:
            while chunk := await asyncio.to_thread(rest.read, chunk_size):
                yield chunk

    async def read_many(self, keys: Sequence[str], concurrency: int = 16) -> dict[str, bytes]:
        # One thread hop for the lot: for small files the hop, not the read, is the cost.
        return await asyncio.to_thread(self._read_files, list(dict.fromkeys(keys)))

    def _read_files(self, keys: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for key in keys:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                out[key] = self._path(key).read_bytes()
        return out

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        return path.stat().st_size

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def list(self, prefix: str = "") -> list[str]:
        out = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.endswith(".tmp"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    async def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise OSError(f"store directory {self.root} is not writable")


_S3_POOL: ThreadPoolExecutor | None = None


SNOWBALL_OBJECTS = 100  # objects per batch request
SNOWBALL_BYTES = 16 * 1024 * 1024  # bytes per batch request (the tar is built in memory)
SNOWBALL_MAX_OBJECT = 1024 * 1024  # larger objects are put on their own


def _snowball_refused(exc: Exception) -> bool:
    """A store without MinIO's batch extract answers the tar upload with one of these."""
    from minio.error import S3Error

    return isinstance(exc, S3Error) and exc.code in (
        "NotImplemented",
        "InvalidRequest",
        "InvalidArgument",
        "MethodNotAllowed",
        "BadRequest",
    )


def _s3_pool() -> ThreadPoolExecutor:
    global _S3_POOL
    if _S3_POOL is None:
        _S3_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="kiln-s3")
    return _S3_POOL


def _forget_pool_after_fork() -> None:
    # A forked child (DataLoader or prefork worker) inherits the pool object but not its
    # threads; reusing it would queue S3 calls forever. The child makes its own on first use.
    global _S3_POOL
    _S3_POOL = None


os.register_at_fork(after_in_child=_forget_pool_after_fork)


class S3Store(ObjectStore):
    """``s3://ACCESS:SECRET@host:port/bucket?secure=false&region=us-east-1``."""

    def __init__(self, url: str) -> None:
        import urllib3
        from minio import Minio

        self.url = url
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.bucket = parts.path.strip("/")
        if not self.bucket:
            raise ValueError("s3 storage URL needs a bucket: s3://key:secret@host:port/bucket")
        secure = query.get("secure", ["true"])[0].lower() in ("1", "true", "yes")
        self.client = Minio(
            f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname),
            access_key=unquote(parts.username or ""),
            secret_key=unquote(parts.password or ""),
            secure=secure,
            region=query.get("region", [None])[0],
            # As many pooled connections as I/O threads, so concurrent puts reuse them.
            http_client=urllib3.PoolManager(
                maxsize=32,
                timeout=urllib3.Timeout(connect=10, read=300),
                # A server's Retry-After must not stall an upload for minutes.
                retries=urllib3.Retry(
                    total=3,
                    backoff_factor=0.2,
                    status_forcelist=[500, 502, 503, 504],
                    respect_retry_after_header=False,
                ),
            ),
        )
        self._bucket_ready = False
        self._snowball = query.get("batch", ["true"])[0].lower() in ("1", "true", "yes")

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def _ensure_bucket(self) -> None:
        if not self._bucket_ready:
            if not await asyncio.to_thread(self.client.bucket_exists, self.bucket):
                try:
                    await asyncio.to_thread(self.client.make_bucket, self.bucket)
                except Exception:  # noqa: BLE001 - a concurrent creator may have won
                    if not await asyncio.to_thread(self.client.bucket_exists, self.bucket):
                        raise
            self._bucket_ready = True

    async def _io(self, fn: Any, *args: Any) -> Any:
        # A pool of its own: S3 calls are slow I/O and must not queue behind CPU work (hashing,
        # decoding) in the default executor.
        return await asyncio.get_running_loop().run_in_executor(_s3_pool(), lambda: fn(*args))

    async def _put_file(self, key: str, path: str, size: int) -> None:
        await self._ensure_bucket()
        await self._io(self.client.fput_object, self.bucket, key, path)

    async def _put_bytes(self, key: str, data: bytes) -> None:
        await self._ensure_bucket()
        await self._io(self.client.put_object, self.bucket, key, io.BytesIO(data), len(data))

    async def put_spooled_many(
        self, blobs: Iterable[SpooledBlob], *, concurrency: int = 16
    ) -> None:
        """Small in-memory blobs go as tar batches that MinIO unpacks into one object each
        (its snowball auto-extract): one request per batch instead of one per object, about
        twice the objects per second. A store that refuses batches gets single puts from then
        on."""
        blobs = list(blobs)
        small = [b for b in blobs if b.data is not None and b.size <= SNOWBALL_MAX_OBJECT]
        if not self._snowball or len(small) < 2:
            await super().put_spooled_many(blobs, concurrency=concurrency)
            return
        batches: list[list[SpooledBlob]] = [[]]
        batch_bytes = 0
        for blob in {b.sha256: b for b in small}.values():
            if len(batches[-1]) >= SNOWBALL_OBJECTS or batch_bytes + blob.size > SNOWBALL_BYTES:
                batches.append([])
                batch_bytes = 0
            batches[-1].append(blob)
            batch_bytes += blob.size
        await self._ensure_bucket()
        rest = [b for b in blobs if not (b.data is not None and b.size <= SNOWBALL_MAX_OBJECT)]
        limit = asyncio.Semaphore(max(1, concurrency // 4))

        async def send(batch: list[SpooledBlob]) -> None:
            async with limit:
                await self._put_snowball(batch)

        try:
            await asyncio.gather(*(send(batch) for batch in batches))
        except Exception as exc:  # noqa: BLE001 - decide below whether batches are unsupported
            if not _snowball_refused(exc):
                raise
            self._snowball = False
            rest = blobs
        await super().put_spooled_many(rest, concurrency=concurrency)

    async def _put_snowball(self, batch: list[SpooledBlob]) -> None:
        from minio.commonconfig import SnowballObject

        objects = [
            SnowballObject(blob_key(b.sha256), data=io.BytesIO(b.data or b""), length=b.size)
            for b in batch
        ]
        await self._io(self.client.upload_snowball_objects, self.bucket, objects)

    async def stream(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        from minio.error import S3Error

        await self._ensure_bucket()
        try:
            resp = await self._io(self.client.get_object, self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFound(key) from None
            raise
        try:
            while chunk := await self._io(resp.read, chunk_size):
                yield chunk
        finally:
            resp.close()
            resp.release_conn()

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
            return True
        except ObjectNotFound:
            return False

    async def size(self, key: str) -> int:
        from minio.error import S3Error

        await self._ensure_bucket()
        try:
            stat = await self._io(self.client.stat_object, self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                raise ObjectNotFound(key) from None
            raise
        return int(stat.size or 0)

    async def delete(self, key: str) -> None:
        await self._ensure_bucket()
        await self._io(self.client.remove_object, self.bucket, key)

    async def list(self, prefix: str = "") -> list[str]:
        await self._ensure_bucket()

        def _list() -> list[str]:
            return sorted(
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name
            )

        return await asyncio.to_thread(_list)

    async def check(self) -> None:
        await self._ensure_bucket()


def open_store(url: str) -> ObjectStore:
    scheme = url.split("://", 1)[0]
    if scheme == "file":
        return LocalStore(url)
    if scheme == "s3":
        return S3Store(url)
    raise ValueError(f"unsupported storage URL scheme {scheme!r} (use s3:// or file://)")
