"""A PyTorch map-style dataset over one dataset version's manifest.

Images come from the local blob cache, fetched from the object store on a miss. The dataset
pickles as a storage URL plus the manifest rows it needs, so every DataLoader worker process
(fork or spawn) opens its own store client and fetcher lazily.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from PIL import Image

from kiln_core.manifest import ClassLabel, Label, ManifestItem, parse_jsonl
from kiln_core.storage import open_store
from kiln_data.cache import BlobCache
from kiln_data.fetch import BlobFetcher, fetcher_for

TargetMode = Literal["class", "labels"]
T = TypeVar("T")


async def read_manifest(store_url: str, key: str) -> list[ManifestItem]:
    """Read and parse the JSONL manifest stored at ``key``."""
    data = await open_store(store_url).read_bytes(key)
    try:
        return list(parse_jsonl(data.splitlines()))
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from exc


def load_manifest(store_url: str, key: str) -> list[ManifestItem]:
    """Synchronous :func:`read_manifest`; usable from inside a running event loop too."""
    return _run_sync(lambda: read_manifest(store_url, key))


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    # asyncio.run refuses to nest inside a running loop: run it on a helper thread instead.
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(main()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="kiln-load-manifest")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a float32 ``C×H×W`` tensor in ``[0, 1]`` (torchvision's ``ToTensor``)."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    # One copy that converts and lays out C×H×W contiguously (PIL's array is read-only).
    chw = np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy(chw).div_(255)


def _class_label(item: ManifestItem) -> str | None:
    names = {label.label for label in item.labels if isinstance(label, ClassLabel)}
    if len(names) > 1:
        raise ValueError(f"item {item.item_id} has several class labels: {sorted(names)}")
    return names.pop() if names else None


class VersionDataset(torch.utils.data.Dataset[tuple[Any, Any]]):
    """Items of a dataset version as ``(image, target)`` pairs, in manifest order.

    - ``manifest``: the object-store key of a JSONL manifest, or the manifest's items.
    - ``storage_url``: where the blobs are (``s3://…`` or ``file://…``).
    - ``split``: keep only items of this split (or these splits).
    - ``transform``: applied to the decoded PIL image (e.g. :func:`to_tensor`).
    - ``target``: ``"class"`` gives the class index of the item's class label (items without
      one are left out); ``"labels"`` gives the item's raw labels (detection, segmentation).
    - ``class_to_idx``: the label → index map (indices 0 … n-1); by default the sorted label
      names of the whole manifest (all splits), so train and val datasets of one version agree.
    - ``image_mode``: PIL mode images are converted to (``None`` keeps what the file has).
    - ``cache_dir`` / ``cache_max_bytes``: the local blob cache (see :class:`BlobCache`).

    ``item_ids[i]`` is the manifest item behind index ``i``, so training can report bad cases.
    """

    def __init__(
        self,
        manifest: str | Iterable[ManifestItem],
        storage_url: str,
        *,
        split: str | Sequence[str] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        target: TargetMode = "class",
        class_to_idx: Mapping[str, int] | None = None,
        image_mode: str | None = "RGB",
        cache_dir: str | os.PathLike[str] | None = None,
        cache_max_bytes: int | None = None,
    ) -> None:
        if target not in ("class", "labels"):
            raise ValueError(f"target must be 'class' or 'labels', not {target!r}")
        all_items = (
            load_manifest(storage_url, manifest) if isinstance(manifest, str) else list(manifest)
        )
        self.storage_url = storage_url
        self.transform = transform
        self.target_mode: TargetMode = target
        self.image_mode = image_mode
        self.cache = BlobCache(cache_dir, max_bytes=cache_max_bytes)

        if class_to_idx is None:
            if target == "class":
                names = {n for item in all_items if (n := _class_label(item)) is not None}
            else:
                names = {label.label for item in all_items for label in item.labels}
            class_to_idx = {name: i for i, name in enumerate(sorted(names))}
        if sorted(class_to_idx.values()) != list(range(len(class_to_idx))):
            raise ValueError("class_to_idx must map the labels to 0 … n-1, each index once")
        self.class_to_idx: dict[str, int] = dict(class_to_idx)
        # classes[i] is the name of class index i.
        self.classes: list[str] = sorted(self.class_to_idx, key=self.class_to_idx.__getitem__)

        splits = {split} if isinstance(split, str) else set(split) if split is not None else None
        items = [item for item in all_items if splits is None or item.split in splits]
        targets: list[Any] = []
        kept: list[ManifestItem] = []
        for item in items:
            if target == "class":
                name = _class_label(item)
                if name is None:
                    continue
                if name not in self.class_to_idx:
                    raise ValueError(f"item {item.item_id}: label {name!r} is not in class_to_idx")
                targets.append(self.class_to_idx[name])
            else:
                targets.append(item.labels)
            kept.append(item)
        self.items: list[ManifestItem] = kept
        self.item_ids: list[str] = [item.item_id for item in kept]
        self._shas: list[str] = [item.blob for item in kept]
        self._targets: list[Any] = targets
        self._fetcher: BlobFetcher | None = None

    def __len__(self) -> int:
        return len(self._shas)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self._sample(index, self._read(index))

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, Any]]:
        """A batch: every missing blob of it is fetched concurrently before decoding."""
        data: list[bytes] = []
        missing: list[int] = []
        for position, index in enumerate(indices):
            try:
                data.append(self.cache.read(self._shas[index]))
            except FileNotFoundError:
                data.append(b"")  # filled in below, once fetched
                missing.append(position)
        if missing:
            fetcher = self.fetcher()
            for position in missing:
                fetcher.submit(self._shas[indices[position]])
            for position in missing:
                data[position] = self._read(indices[position])
        return [self._sample(i, d) for i, d in zip(indices, data, strict=True)]

    def _read(self, index: int) -> bytes:
        sha = self._shas[index]
        # Twice: an eviction may remove the blob between fetching and reading it.
        for _attempt in range(2):
            try:
                return self.cache.read(sha)
            except FileNotFoundError:
                try:
                    self.fetcher().submit(sha).result()
                except Exception as exc:
                    exc.add_note(f"while fetching item {self.item_ids[index]} (blob {sha})")
                    raise
        return self.cache.read(sha)

    def _sample(self, index: int, data: bytes) -> tuple[Any, Any]:
        image: Image.Image = Image.open(io.BytesIO(data))
        if self.image_mode is not None and image.mode != self.image_mode:
            image = image.convert(self.image_mode)
        else:
            image.load()
        sample = self.transform(image) if self.transform is not None else image
        return sample, self._targets[index]

    def labels(self, index: int) -> list[Label]:
        """The raw labels of the item at ``index`` (whatever the target mode)."""
        return list(self.items[index].labels)

    def fetcher(self) -> BlobFetcher:
        """This process's fetcher (a DataLoader worker opens its own on first use)."""
        if self._fetcher is None or self._fetcher.pid != os.getpid():
            self._fetcher = fetcher_for(self.storage_url, self.cache)
        return self._fetcher

    def prefetch(self, indices: Iterable[int]) -> None:
        """Start fetching the blobs of these items in the background; cached ones cost a stat."""
        fetcher: BlobFetcher | None = None
        for index in indices:
            sha = self._shas[index]
            if not self.cache.contains(sha):
                fetcher = fetcher or self.fetcher()
                fetcher.submit(sha)

    def warm(self, indices: Iterable[int] | None = None) -> int:
        """Fetch the blobs of these items (default: all) and wait; returns how many were missing."""
        wanted = range(len(self)) if indices is None else indices
        missing = {self._shas[i] for i in wanted if not self.cache.contains(self._shas[i])}
        if missing:
            fetcher = self.fetcher()
            for future in [fetcher.submit(sha) for sha in missing]:
                future.result()
        return len(missing)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # Event loops and store clients do not cross processes; workers open their own.
        state["_fetcher"] = None
        return state
