"""Datasets: create, upload a folder or files (blobs Kiln already has are not sent again),
import an archive and follow its job, versions, diff, export to a file."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import mimetypes
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Literal

from tqdm.auto import tqdm

from kiln_client.errors import JobFailed, KilnClientError, TimedOut
from kiln_client.transport import Transport
from kiln_client.types import Dataset, DatasetVersion, Job, UploadReport

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Per multipart request: Kiln takes up to 2,000 files; smaller batches show progress sooner.
BATCH_FILES = 200
BATCH_BYTES = 32 * 1024 * 1024
HASH_CHUNK = 1024 * 1024
Split = Literal["train", "val", "test"]
SPLITS = ("train", "val", "test")


def sha256_of(path: Path) -> str:
    """The file's SHA-256 (how Kiln names blobs)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_files(root: Path) -> builtins.list[tuple[str, Path]]:
    """Images under ``root`` as (item id, path): the id is the path relative to ``root``."""
    return sorted(
        (path.relative_to(root).as_posix(), path)
        for path in root.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )


class Datasets:
    """``client.datasets``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def create(
        self, name: str, task_type: str = "classification", description: str = "", **fields: Any
    ) -> Dataset:
        body = {"name": name, "task_type": task_type, "description": description, **fields}
        return await self._t.json("dataset", "POST", "/v1/datasets", json=body)  # type: ignore[no-any-return]

    async def get(self, dataset_id: str) -> Dataset:
        return await self._t.json("dataset", "GET", f"/v1/datasets/{dataset_id}")  # type: ignore[no-any-return]

    async def list(
        self, limit: int = 100, offset: int = 0, **filters: Any
    ) -> builtins.list[Dataset]:
        params = {"limit": limit, "offset": offset, **filters}
        page = await self._t.json("dataset", "GET", "/v1/datasets", params=params)
        return page["items"]  # type: ignore[no-any-return]

    async def versions(
        self, dataset_id: str, limit: int = 100, offset: int = 0
    ) -> builtins.list[DatasetVersion]:
        page = await self._t.json(
            "dataset",
            "GET",
            f"/v1/datasets/{dataset_id}/versions",
            params={"limit": limit, "offset": offset},
        )
        return page["items"]  # type: ignore[no-any-return]

    async def version(self, dataset_id: str, version: int) -> DatasetVersion:
        path = f"/v1/datasets/{dataset_id}/versions/{version}"
        return await self._t.json("dataset", "GET", path)  # type: ignore[no-any-return]

    async def diff(self, dataset_id: str, version: int, against: int) -> dict[str, Any]:
        """Items added, removed and relabelled between ``against`` and ``version``."""
        path = f"/v1/datasets/{dataset_id}/versions/{version}/diff"
        return await self._t.json("dataset", "GET", path, params={"against": against})  # type: ignore[no-any-return]

    async def items(
        self, dataset_id: str, version: int, limit: int = 500, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        path = f"/v1/datasets/{dataset_id}/versions/{version}/items"
        page = await self._t.json("dataset", "GET", path, params={"limit": limit, "offset": offset})
        return page["items"]  # type: ignore[no-any-return]

    async def export(
        self,
        dataset_id: str,
        version: int,
        to: str | Path,
        format: str = "jsonl",
        *,
        progress: bool = False,
    ) -> Path:
        """Write the version in ``format`` (jsonl, coco, yolo, voc, imagefolder) to ``to``."""
        target = Path(to)
        path = f"/v1/datasets/{dataset_id}/versions/{version}/export"
        partial = target.with_name(target.name + ".part")
        async with self._t.stream("dataset", "GET", path, params={"format": format}) as response:
            with (
                partial.open("wb") as out,
                tqdm(unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar,
            ):
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                    bar.update(len(chunk))
        partial.replace(target)  # a finished file or none: an interrupted export leaves no stub
        return target

    async def open_draft(self, dataset_id: str, base_version: int | None = None) -> str:
        body = {"base_version": base_version} if base_version else {}
        draft = await self._t.json(
            "dataset", "POST", f"/v1/datasets/{dataset_id}/drafts", json=body
        )
        return str(draft["id"])

    async def commit(self, dataset_id: str, draft_id: str, message: str = "") -> DatasetVersion:
        path = f"/v1/datasets/{dataset_id}/drafts/{draft_id}/commit"
        return await self._t.json("dataset", "POST", path, json={"message": message})  # type: ignore[no-any-return]

    async def add_files(
        self,
        dataset_id: str,
        draft_id: str,
        files: Iterable[tuple[str, Path | bytes]],
        *,
        labels: Mapping[str, str | builtins.list[Any]] | None = None,
        split: Split | Mapping[str, Split] | None = None,
        progress: bool | Callable[[int], None] = True,
        skip_stored: bool = True,
        concurrency: int = 1,
        batch_files: int = BATCH_FILES,
    ) -> tuple[int, int, builtins.list[dict[str, Any]]]:
        """Put files into an open draft as ``(item id, path or bytes)``. With ``skip_stored``
        each is named by its SHA-256 first: those Kiln already stores join without their bytes
        being sent; the rest are uploaded (``concurrency`` requests at a time). Returns
        (sent, skipped, rejected)."""
        listed = builtins.list(files)
        labels = labels or {}
        total = sum(_size(source) for _, source in listed)
        bar = tqdm(
            total=total, unit="B", unit_scale=True, desc="upload", disable=progress is not True
        )
        tick = progress if callable(progress) else bar.update
        skipped = 0
        rejected: builtins.list[dict[str, Any]] = []
        base = f"/v1/datasets/{dataset_id}/drafts/{draft_id}"
        todo = listed
        try:
            if skip_stored:
                # Hashing a folder takes a while: off the event loop, so other calls go on.
                entries = await asyncio.to_thread(lambda: [(n, s, _hash(s)) for n, s in listed])
                todo = []
                for start in range(0, len(entries), 1000):
                    chunk = entries[start : start + 1000]
                    refs = [
                        {
                            "item_id": n,
                            "blob": sha,
                            "split": _split(split, n),
                            "labels": _labels(labels, n),
                        }
                        for n, _, sha in chunk
                    ]
                    # Adding items by hash is idempotent: the same items again change nothing.
                    known = await self._t.json(
                        "dataset",
                        "POST",
                        f"{base}/blob-items",
                        json={"items": refs},
                        idempotent=True,
                    )
                    rejected += known["rejected"]
                    missing = set(known["missing"])
                    skipped += len(known["accepted"])
                    tick(sum(_size(s) for _, s, sha in chunk if sha not in missing))
                    todo += [(n, s) for n, s, sha in chunk if sha in missing]
            limit = asyncio.Semaphore(max(1, concurrency))

            async def send(batch: builtins.list[tuple[str, Path | bytes]]) -> int:
                label_map = {n: _labels(labels, n) for n, _ in batch if n in labels}
                data: dict[str, str] = {}
                if _split(split, batch[0][0]):
                    data["split"] = str(_split(split, batch[0][0]))
                if label_map:
                    data["labels"] = json.dumps(label_map)
                async with limit:
                    answer = await self._t.json(
                        "dataset",
                        "POST",
                        f"{base}/items",
                        files=lambda: [("files", (n, _read(s), _media_type(n))) for n, s in batch],
                        data=data,
                        idempotent=True,  # the same files again replace the same items
                    )
                rejected.extend(answer["rejected"])
                tick(sum(_size(s) for _, s in batch))
                return len(answer["accepted"])

            # One split per multipart request: files are grouped by theirs.
            groups: dict[str | None, builtins.list[tuple[str, Path | bytes]]] = {}
            for name, source in todo:
                groups.setdefault(_split(split, name), []).append((name, source))
            batches = [b for group in groups.values() for b in _batches(group, batch_files)]
            sent = sum(await asyncio.gather(*(send(b) for b in batches)))
        finally:
            bar.close()
        return sent, skipped, rejected

    async def upload(
        self,
        dataset_id: str,
        files: Iterable[tuple[str, Path | bytes]],
        *,
        labels: Mapping[str, str | builtins.list[Any]] | None = None,
        split: Split | Mapping[str, Split] | None = None,
        message: str = "",
        base_version: int | None = None,
        progress: bool = True,
    ) -> UploadReport:
        """Upload files into a new version (a draft, the files, a commit)."""
        files = list(files)
        draft = await self.open_draft(dataset_id, base_version)
        sent, skipped, rejected = await self.add_files(
            dataset_id, draft, files, labels=labels, split=split, progress=progress
        )
        if sent + skipped == 0 and rejected:
            first = rejected[0]
            raise KilnClientError(
                f"all {len(rejected)} files were rejected, e.g. {first.get('file')}: "
                f"{first.get('reason')}"
            )
        version = await self.commit(dataset_id, draft, message)
        return UploadReport(
            version=version, files=len(files), sent=sent, skipped=skipped, rejected=rejected
        )

    async def upload_folder(
        self,
        dataset_id: str,
        folder: str | Path,
        *,
        labels_from_folders: bool = False,
        split: Split | None = None,
        message: str = "",
        base_version: int | None = None,
        progress: bool = True,
    ) -> UploadReport:
        """Upload every image under ``folder`` as a new version; with ``labels_from_folders``
        an image's parent folder names its class (``cats/1.png`` is a cat). Images under a
        top folder named ``train``, ``val`` or ``test`` go to that split (unless ``split``
        names one for all)."""
        root = Path(folder)
        if not root.is_dir():
            raise KilnClientError(f"{root} is not a folder")
        files = folder_files(root)
        if not files:
            raise KilnClientError(f"no images under {root}")
        labels = (
            {name: name.split("/")[-2] for name, _ in files if "/" in name}
            if labels_from_folders
            else None
        )
        splits: dict[str, Split] = {
            name: name.split("/")[0]  # type: ignore[misc]
            for name, _ in files
            if name.split("/")[0] in SPLITS
        }
        return await self.upload(
            dataset_id,
            files,
            labels=labels,
            split=split or splits or None,
            message=message or f"upload of {root.name}",
            base_version=base_version,
            progress=progress,
        )

    async def import_archive(
        self,
        dataset_id: str,
        archive: str | Path,
        format: str = "auto",
        *,
        mode: str = "append",
        message: str = "",
        wait: bool = True,
        timeout_s: float = 600,
    ) -> Job:
        """Send an archive (zip, tar.gz) to import; with ``wait`` follow its job to the end."""
        path = Path(archive)

        def archive_file(handle: BinaryIO) -> dict[str, Any]:
            handle.seek(0)  # a retried request sends the file from its start again
            return {"file": (path.name, handle, "application/octet-stream")}

        with path.open("rb") as handle:
            accepted = await self._t.json(
                "dataset",
                "POST",
                f"/v1/datasets/{dataset_id}/imports",
                params={"format": format, "mode": mode},
                files=lambda: archive_file(handle),
                data={"message": message},
            )
        if not wait:
            return await self.job(accepted["job_id"])
        return await self.wait_job(accepted["job_id"], timeout_s=timeout_s)

    async def job(self, job_id: str) -> Job:
        return await self._t.json("dataset", "GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    async def wait_job(self, job_id: str, *, timeout_s: float = 600, every_s: float = 0.5) -> Job:
        """Poll a dataset job until it ends; a failure raises :class:`JobFailed`."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = await self.job(job_id)
            if job.get("status") == "succeeded":
                return job
            if job.get("status") in ("failed", "cancelled"):
                raise JobFailed(f"dataset job {job_id}", dict(job))
            if time.monotonic() > deadline:
                raise TimedOut(f"dataset job {job_id} still {job.get('status')} after {timeout_s}s")
            await asyncio.sleep(every_s)


def _hash(source: Path | bytes) -> str:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    return sha256_of(source)


def _size(source: Path | bytes) -> int:
    return len(source) if isinstance(source, bytes) else source.stat().st_size


def _read(source: Path | bytes) -> bytes:
    return source if isinstance(source, bytes) else source.read_bytes()


def _media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _split(split: Split | Mapping[str, Split] | None, name: str) -> str | None:
    if split is None or isinstance(split, str):
        return split
    return split.get(name)


def _labels(labels: Mapping[str, str | builtins.list[Any]], name: str) -> builtins.list[Any]:
    value = labels.get(name)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [{"type": "class", "label": v} if isinstance(v, str) else v for v in values]


def _batches(
    files: builtins.list[tuple[str, Path | bytes]], most: int = BATCH_FILES
) -> Iterable[builtins.list[tuple[str, Path | bytes]]]:
    batch: builtins.list[tuple[str, Path | bytes]] = []
    size = 0
    for entry in files:
        entry_size = _size(entry[1])
        if batch and (len(batch) >= most or size + entry_size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry_size
    if batch:
        yield batch
