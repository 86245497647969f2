"""A local content-addressed blob cache shared by every dataset version on the machine.

Files are keyed by SHA-256 (``<cache_dir>/sha256/ab/cdef…``), so a cached file is never stale
and one copy serves every version and dataset that references the same bytes. A blob is
streamed from the object store into a temporary file next to its final path while hashing,
and lands by atomic rename only when the hash matches, so readers never see a partial or
corrupt file. A per-blob lock file makes concurrent processes (DataLoader workers, several
training jobs) fetch each blob once; a process that dies mid-fetch leaves its lock released.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path

from kiln_core.backoff import Backoff
from kiln_core.errors import KilnError
from kiln_core.storage import ObjectStore, blob_key

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "kiln" / "blobs"
# Refresh a hit's atime at most this often: enough for LRU-ish eviction without a write per read.
ATIME_REFRESH_S = 60.0
STALE_PART_S = 3600.0


class CorruptBlob(KilnError):
    """The bytes the object store returned do not hash to the blob's SHA-256."""

    status, type, title = 502, "corrupt-blob", "Blob content does not match its SHA-256"


class BlobCache:
    """Blobs on local disk by SHA-256, filled from an :class:`ObjectStore` on a miss.

    ``max_bytes`` caps the cache size: when exceeded, the least recently read blobs (by atime)
    are deleted down to 90 % of the cap. Without it the cache grows without bound.
    """

    def __init__(
        self, cache_dir: str | os.PathLike[str] | None = None, max_bytes: int | None = None
    ) -> None:
        self.root = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
        self.max_bytes = max_bytes
        # A plain string prefix: path() sits on the per-item hot path and must stay cheap.
        self._prefix = f"{self.root.resolve()}/sha256/"
        self._lock = threading.Lock()
        self._scanned_bytes: int | None = None
        self._added_since_scan = 0
        self._evicting = False

    def __reduce__(self) -> tuple[type[BlobCache], tuple[Path, int | None]]:
        # Locks do not pickle; a worker process keeps its own eviction bookkeeping anyway.
        return (BlobCache, (self.root, self.max_bytes))

    def path(self, sha256: str) -> str:
        """Where the blob lives (or will live) in the cache; no I/O and no hashing."""
        return f"{self._prefix}{sha256[:2]}/{sha256[2:]}"

    def contains(self, sha256: str) -> bool:
        return os.path.isfile(self.path(sha256))

    def read(self, sha256: str) -> bytes:
        """The cached bytes; raises ``FileNotFoundError`` on a miss."""
        with open(self.path(sha256), "rb") as f:
            if self.max_bytes is not None:
                self._touch(f.fileno())
            return f.read()

    def _touch(self, fd: int) -> None:
        # relatime mounts rarely update atime on read; eviction needs a fresh one.
        st = os.fstat(fd)
        now = time.time()
        if now - st.st_atime > ATIME_REFRESH_S:
            os.utime(fd, (now, st.st_mtime))

    async def fill(self, store: ObjectStore, sha256: str) -> str:
        """Fetch the blob from ``store`` into the cache unless it is there; returns its path.

        The bytes are hashed while streaming and a mismatch raises :class:`CorruptBlob`
        without leaving anything in the cache.
        """
        final = self.path(sha256)
        if self.contains(sha256):
            return final
        shard = os.path.dirname(final)
        os.makedirs(shard, exist_ok=True)
        lock_path = f"{final}.lock"
        lock_fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        locked = False
        try:
            backoff = Backoff(0.005, 0.1)
            while True:
                try:
                    # POSIX record locks belong to a process, so a DataLoader worker forked while
                    # we hold one does not inherit it (it would with flock, and hold it forever).
                    fcntl.lockf(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    locked = True
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EAGAIN):
                        raise
                # Another process is fetching it; polling also avoids the kernel's spurious
                # EDEADLK on blocking POSIX locks taken by several threads of two processes.
                if self.contains(sha256):
                    return final
                await backoff.sleep()
            if self.contains(sha256):
                return final
            size = await self._download(store, sha256, final)
        finally:
            if locked:
                # Safe while others poll: they re-check the final path before fetching.
                try:
                    os.unlink(lock_path)
                except FileNotFoundError:
                    pass
            os.close(lock_fd)
        if self.max_bytes is not None:
            await asyncio.to_thread(self._note_added, size)
        return final

    async def _download(self, store: ObjectStore, sha256: str, final: str) -> int:
        tmp = f"{os.path.dirname(final)}/.{os.path.basename(final)}.{os.getpid()}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            out = await asyncio.to_thread(open, tmp, "wb")
            try:
                async for chunk in store.stream(blob_key(sha256)):
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
                    size += len(chunk)
            finally:
                out.close()
            actual = digest.hexdigest()
            if actual != sha256:
                raise CorruptBlob(
                    f"blob {sha256} from {_safe_url(store)} hashes to {actual};"
                    " refusing to cache it",
                    sha256=sha256,
                    actual_sha256=actual,
                )
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return size

    def _note_added(self, size: int) -> None:
        if self.max_bytes is None:
            return
        with self._lock:
            self._added_since_scan += size
            estimate = (self._scanned_bytes or 0) + self._added_since_scan
            # Rescan now and then: other processes fill the same directory behind our back.
            due = (
                self._scanned_bytes is None
                or estimate > self.max_bytes
                or self._added_since_scan * 10 >= self.max_bytes
            )
            if not due or self._evicting:
                return
            self._evicting = True
        try:
            self.evict()
        finally:
            with self._lock:
                self._evicting = False

    def evict(self) -> int:
        """Delete least recently read blobs until the cache is within 90 % of ``max_bytes``.

        Returns the number of bytes freed (0 without a cap). Also removes temp files that
        crashed fetches left behind.
        """
        entries = []
        total = 0
        now = time.time()
        for path in self.root.glob("sha256/*/*"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if path.name.endswith(".part"):
                # Left by a process killed mid-fetch; a live fetch writes far more often.
                if now - st.st_mtime > STALE_PART_S:
                    path.unlink(missing_ok=True)
                continue
            if path.name.endswith(".lock"):
                continue
            entries.append((st.st_atime, st.st_size, path))
            total += st.st_size
        freed = 0
        if self.max_bytes is not None and total > self.max_bytes:
            target = int(self.max_bytes * 0.9)
            for _atime, size, path in sorted(entries, key=lambda e: e[0]):
                if total - freed <= target:
                    break
                # A reader holding it open keeps its bytes; a later reader just refetches.
                path.unlink(missing_ok=True)
                freed += size
        with self._lock:
            self._scanned_bytes = total - freed
            self._added_since_scan = 0
        return freed

    def size_bytes(self) -> int:
        """Total bytes of cached blobs (a directory scan)."""
        return sum(
            p.stat().st_size
            for p in self.root.glob("sha256/*/*")
            if not p.name.startswith(".") and not p.name.endswith(".lock")
        )


def _safe_url(store: ObjectStore) -> str:
    """The store URL without credentials, for error messages."""
    url = store.url
    scheme, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
