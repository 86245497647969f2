"""DataLoaders over dataset versions: seeded shuffling, blob prefetching, seeded workers."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from kiln_data.dataset import VersionDataset


class ShuffleSampler(Sampler[int]):
    """Indices ``0..n-1``, shuffled per epoch from ``seed`` alone (reproducible across runs).

    Each ``iter()`` uses the current ``epoch`` and then advances it; ``set_epoch`` pins it, so a
    run resumed at epoch ``k`` sees the same order as the original run did.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if not self.shuffle:
            return iter(range(self.n))
        # Mix seed and epoch so (seed, epoch + 1) never replays (seed + 1, epoch).
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


class PrefetchSampler(Sampler[int]):
    """Passes ``sampler``'s indices through, asking the dataset to fetch ``lookahead`` ahead.

    It runs in the main process where the sampler is iterated, so blobs are usually in the shared
    disk cache before a worker process gets their indices.
    """

    def __init__(self, sampler: Sampler[int], dataset: VersionDataset, lookahead: int) -> None:
        self.sampler = sampler
        self.dataset = dataset
        self.lookahead = max(1, lookahead)

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        window: deque[int] = deque()
        for index in self.sampler:
            self.dataset.prefetch((index,))
            window.append(index)
            if len(window) > self.lookahead:
                yield window.popleft()
        yield from window

    def __len__(self) -> int:
        assert isinstance(self.sampler, Sized)
        return len(self.sampler)


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and NumPy in a worker from torch's per-worker seed (augmentations)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class _WorkerInit:
    """``seed_worker`` then the caller's hook; a class, not a closure, so spawn can pickle it."""

    def __init__(self, then: Callable[[int], None] | None) -> None:
        self.then = then

    def __call__(self, worker_id: int) -> None:
        seed_worker(worker_id)
        if self.then is not None:
            self.then(worker_id)


def collate_labels(batch: Sequence[tuple[Any, Any]]) -> tuple[Any, list[Any]]:
    """Collate for ``target="labels"``: images stacked when they can be, targets as a list."""
    images = [sample for sample, _ in batch]
    targets = [target for _, target in batch]
    stackable = (
        all(isinstance(i, torch.Tensor) for i in images)
        and len({tuple(i.shape) for i in images}) == 1
    )
    return (default_collate(images) if stackable else images), targets


def make_loader(
    dataset: Dataset[Any],
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    *,
    drop_last: bool = False,
    sampler: Sampler[int] | None = None,
    prefetch_items: int | None = None,
    collate_fn: Callable[[Any], Any] | None = None,
    worker_init_fn: Callable[[int], None] | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
    multiprocessing_context: str | None = None,
) -> DataLoader[Any]:
    """A DataLoader with reproducible order and blob prefetching for a :class:`VersionDataset`.

    The same ``seed`` gives the same batches in the same order, epoch after epoch, and the same
    worker seeds (``seed_worker`` then seeds ``random`` and NumPy for augmentations). Pass
    ``sampler`` (e.g. a ``DistributedSampler``) to replace the built-in shuffling.
    ``prefetch_items`` is how far ahead of the loader the main process fetches blobs (default
    four batches per worker); 0 turns prefetching off.
    """
    if sampler is None:
        assert isinstance(dataset, Sized)
        sampler = ShuffleSampler(len(dataset), seed=seed, shuffle=shuffle)
    if prefetch_items is None:
        prefetch_items = 4 * batch_size * max(1, num_workers)
    if isinstance(dataset, VersionDataset) and prefetch_items > 0:
        sampler = PrefetchSampler(sampler, dataset, prefetch_items)
    if collate_fn is None and getattr(dataset, "target_mode", None) == "labels":
        collate_fn = collate_labels

    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_fn,
        worker_init_fn=_WorkerInit(worker_init_fn) if num_workers > 0 else None,
        # Draws the workers' base seed each epoch: seeded, so workers' RNGs repeat run to run.
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
    )
