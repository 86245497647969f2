"""A dataset version's items as training tensors, per template kind.

The manifest and blobs are read through :mod:`kiln_data` (its content-addressed local cache,
fetching missing blobs concurrently), decoded once with :func:`kiln_training.export.preprocess`'s
building blocks, and held in memory as tensors, so every epoch after the first read costs no
I/O or decoding and a resumed run sees exactly the same tensors.

Items are those with exactly one class label (manifest label ``type: "class"``); the label map
is the sorted class names of the whole version. Blob conventions per template kind:

- image: any image Pillow decodes (PNG, JPEG, …).
- tabular: one row of numbers, either a JSON array (``application/json``: ``[5.1, 3.5, 1.4]``)
  or one CSV line (``text/csv``: ``5.1,3.5,1.4``); every item has the same number of features.
  Features are standardised with the train split's mean and standard deviation.
- text: UTF-8 text (``text/plain``), tokenised as described in :mod:`kiln_training.export`.

Splits: train items are those whose ``split`` is ``train_split``, evaluation items those whose
split is ``eval_split`` (``test`` if none is). A version without any splits is split 80/20 by a
permutation seeded with the run's seed; a version with train items but no evaluation items holds
out 20 % of train the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kiln_core.catalog import Preprocessing
from kiln_core.errors import KilnError
from kiln_core.manifest import ClassLabel, ManifestItem
from kiln_core.preprocessing import decode_image, normalize, parse_tabular, tokenize
from kiln_data import VersionDataset, load_manifest
from kiln_training.export import pad_tokens

READ_CHUNK = 256


class UnusableData(KilnError):
    status, type, title = 422, "unusable-training-data", "The dataset version cannot be trained on"


@dataclass
class DataRef:
    """Where a run's data is: a version's manifest in an object store."""

    storage_url: str
    manifest_key: str
    train_split: str = "train"
    eval_split: str = "val"
    cache_dir: str | None = None


@dataclass
class Examples:
    """Model-ready inputs and class indices of a set of items, in a fixed order."""

    inputs: torch.Tensor
    targets: torch.Tensor
    item_ids: list[str]

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass
class PreparedData:
    train: Examples
    eval: Examples
    label_map: list[str]
    preprocessing: Preprocessing
    input_shape: list[int]  # one example's input shape (text: [-1])


class _RawBlobs(VersionDataset):
    """A :class:`VersionDataset` that yields each item's raw bytes instead of an image."""

    def _sample(self, index: int, data: bytes) -> tuple[Any, Any]:
        return data, self._targets[index]


def _class_name(item: ManifestItem) -> str | None:
    names = {label.label for label in item.labels if isinstance(label, ClassLabel)}
    return names.pop() if len(names) == 1 else None


def split_items(
    items: Sequence[ManifestItem], train_split: str, eval_split: str, seed: int
) -> tuple[list[ManifestItem], list[ManifestItem]]:
    """Train and evaluation items of a version (see the module docstring for the rules)."""
    if not any(item.split for item in items):
        return _holdout(list(items), seed)
    train = [item for item in items if item.split == train_split]
    evaluation = [item for item in items if item.split == eval_split]
    if not evaluation and eval_split != "test":
        evaluation = [item for item in items if item.split == "test"]
    if not evaluation:
        return _holdout(train, seed)
    return train, evaluation


def _holdout(items: list[ManifestItem], seed: int) -> tuple[list[ManifestItem], list[ManifestItem]]:
    if len(items) < 2:
        return items, []
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = max(1, len(items) // 5)
    eval_idx = set(order[:n_eval])
    train = [item for i, item in enumerate(items) if i not in eval_idx]
    return train, [items[i] for i in sorted(eval_idx)]


def _read_blobs(
    items: list[ManifestItem], data: DataRef, class_to_idx: dict[str, int]
) -> tuple[list[bytes], list[int]]:
    dataset = _RawBlobs(
        items,
        data.storage_url,
        class_to_idx=class_to_idx,
        image_mode=None,
        cache_dir=data.cache_dir,
    )
    blobs: list[bytes] = []
    targets: list[int] = []
    for start in range(0, len(dataset), READ_CHUNK):
        for raw, target in dataset.__getitems__(
            range(start, min(start + READ_CHUNK, len(dataset)))
        ):
            blobs.append(raw)
            targets.append(target)
    return blobs, targets


def prepare_data(data: DataRef, kind: str, params: dict[str, Any], seed: int) -> PreparedData:
    """Read, split and decode a version's labelled items for a template of ``kind``."""
    manifest = load_manifest(data.storage_url, data.manifest_key)
    labelled = [item for item in manifest if _class_name(item) is not None]
    label_map = sorted({name for item in labelled if (name := _class_name(item)) is not None})
    if len(label_map) < 2:
        raise UnusableData(
            f"training needs items of at least 2 classes; the version has {len(label_map)}"
            f" class label(s) over {len(labelled)} labelled item(s)"
        )
    class_to_idx = {name: i for i, name in enumerate(label_map)}
    train_items, eval_items = split_items(labelled, data.train_split, data.eval_split, seed)
    if not train_items:
        raise UnusableData(f"no labelled items in split {data.train_split!r}")
    train_raw, train_y = _read_blobs(train_items, data, class_to_idx)
    eval_raw, eval_y = _read_blobs(eval_items, data, class_to_idx)
    try:
        train_x, eval_x, preprocessing, shape = _decode(kind, params, train_raw, eval_raw)
    except (ValueError, OSError) as exc:
        raise UnusableData(f"cannot decode {kind} items: {exc}") from exc
    return PreparedData(
        train=Examples(train_x, torch.tensor(train_y, dtype=torch.int64), _ids(train_items)),
        eval=Examples(eval_x, torch.tensor(eval_y, dtype=torch.int64), _ids(eval_items)),
        label_map=label_map,
        preprocessing=preprocessing,
        input_shape=shape,
    )


def _ids(items: list[ManifestItem]) -> list[str]:
    return [item.item_id for item in items]


def _decode(
    kind: str, params: dict[str, Any], train: list[bytes], evaluation: list[bytes]
) -> tuple[torch.Tensor, torch.Tensor, Preprocessing, list[int]]:
    if kind == "image":
        size = [int(params["image_size"]), int(params["image_size"])]
        mode = str(params["image_mode"])
        channels = 1 if mode == "L" else 3
        train_a = _stack([decode_image(r, mode, size) for r in train], [channels, *size])
        eval_a = _stack([decode_image(r, mode, size) for r in evaluation], [channels, *size])
        mean, std = _stats(train_a, axes=(0, 2, 3))
        preprocessing = Preprocessing(kind="image", mode=mode, size=size, mean=mean, std=std)
        return _norm(train_a, mean, std), _norm(eval_a, mean, std), preprocessing, [channels, *size]
    if kind == "tabular":
        rows = [parse_tabular(r) for r in train]
        eval_rows = [parse_tabular(r) for r in evaluation]
        widths = {len(r) for r in rows + eval_rows}
        if len(widths) != 1:
            raise ValueError(f"items have different numbers of features: {sorted(widths)}")
        (features,) = widths
        train_a, eval_a = _stack(rows, [features]), _stack(eval_rows, [features])
        mean, std = _stats(train_a, axes=(0,))
        preprocessing = Preprocessing(kind="tabular", mean=mean, std=std)
        return _norm(train_a, mean, std), _norm(eval_a, mean, std), preprocessing, [features]
    if kind == "text":
        buckets = int(params["buckets"])
        train_t = [tokenize(r.decode("utf-8"), buckets) for r in train]
        eval_t = [tokenize(r.decode("utf-8"), buckets) for r in evaluation]
        preprocessing = Preprocessing(kind="text", buckets=buckets, hash="crc32")
        return pad_tokens(train_t), pad_tokens(eval_t), preprocessing, [-1]
    raise ValueError(f"unknown template kind {kind!r}")


def _stack(rows: list[np.ndarray], shape: list[int]) -> np.ndarray:
    if not rows:
        return np.zeros([0, *shape], dtype=np.float32)
    return np.stack(rows).astype(np.float32, copy=False)


def _stats(array: np.ndarray, axes: tuple[int, ...]) -> tuple[list[float], list[float]]:
    # float64 accumulation, rounded to float32 values so serving normalises identically.
    mean = array.astype(np.float64).mean(axis=axes)
    std = array.astype(np.float64).std(axis=axes)
    std = np.where(std < 1e-6, 1.0, std)
    return (
        [float(v) for v in mean.astype(np.float32)],
        [float(v) for v in std.astype(np.float32)],
    )


def _norm(array: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    # normalize() works along axis 0 of one example; move the batch axis out of its way.
    moved = np.moveaxis(array, 0, -1)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(normalize(moved, mean, std), -1, 0)))
