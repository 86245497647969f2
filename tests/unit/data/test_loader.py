"""make_loader: reproducible order, worker processes (fork and spawn), fetch-once prefetching."""

from __future__ import annotations

import fcntl
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from kiln_core.storage import LocalStore, blob_key
from kiln_data import VersionDataset, make_loader, to_tensor
from kiln_data.loader import ShuffleSampler
from tests.unit.data.conftest import LABELS, Version, make_version


def batches(loader: torch.utils.data.DataLoader) -> list[tuple[torch.Tensor, list[int]]]:  # type: ignore[type-arg]
    return [(images, targets.tolist()) for images, targets in loader]


def dataset(version: Version, **kwargs: object) -> VersionDataset:
    kwargs.setdefault("transform", to_tensor)
    return VersionDataset(
        version.items,
        version.store_url,
        cache_dir=version.cache_dir,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def read_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every blob read from a local store, logged to a file so forked workers' reads count."""
    log = tmp_path / "reads.log"
    log.touch()
    original = LocalStore.stream

    def logging_stream(
        self: LocalStore, key: str, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        if key.startswith("blobs/"):
            with log.open("a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                f.write(key + "\n")
        return original(self, key, chunk_size)

    monkeypatch.setattr(LocalStore, "stream", logging_stream)
    return log


def reads(log: Path) -> Counter[str]:
    return Counter(log.read_text().split())


async def test_unshuffled_batches_follow_manifest_order(version: Version) -> None:
    loader = make_loader(dataset(version), batch_size=5, shuffle=False)
    got = batches(loader)
    assert [len(t) for _, t in got] == [5, 5, 2]
    targets = [t for _, batch in got for t in batch]
    classes = sorted(LABELS)
    assert [classes[t] for t in targets] == [LABELS[i % 3] for i in range(len(version.items))]
    assert got[0][0].shape == (5, 3, 8, 8)


@pytest.mark.parametrize("context", ["fork", "spawn"])
async def test_two_workers_yield_every_item_once(
    version: Version, read_log: Path, context: str
) -> None:
    ds = dataset(version)
    loader = make_loader(ds, batch_size=3, seed=1, num_workers=2, multiprocessing_context=context)
    expected = make_loader(ds, batch_size=3, seed=1, num_workers=0)
    got = batches(loader)
    assert sum(len(t) for _, t in got) == len(version.items)
    # Workers return batches in sampler order, so the result matches the in-process loader.
    want = batches(expected)
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(got, want, strict=True))
    if context == "fork":
        # Main-process prefetch and two workers share the disk cache: each blob fetched once.
        assert reads(read_log) == Counter(blob_key(item.blob) for item in version.items)


async def test_second_epoch_with_workers_needs_no_store(version: Version, read_log: Path) -> None:
    loader = make_loader(dataset(version), batch_size=4, seed=3, num_workers=2)
    first = batches(loader)
    fetched = reads(read_log)
    shutil.rmtree(version.store_dir)
    second = batches(loader)
    assert reads(read_log) == fetched
    assert sorted(t for _, b in first for t in b) == sorted(t for _, b in second for t in b)


async def test_same_seed_gives_the_same_batches(version: Version) -> None:
    def epochs(seed: int) -> list[list[list[int]]]:
        loader = make_loader(dataset(version, target="class"), batch_size=4, seed=seed)
        return [[t for _, t in batches(loader)] for _ in range(3)]

    a, b, c = epochs(7), epochs(7), epochs(8)
    assert a == b
    assert a != c
    assert a[0] != a[1]  # a new order every epoch, reproducible all the same


def test_shuffle_sampler_resumes_at_an_epoch() -> None:
    sampler = ShuffleSampler(50, seed=11)
    orders = [list(sampler) for _ in range(3)]
    resumed = ShuffleSampler(50, seed=11)
    resumed.set_epoch(2)
    assert list(resumed) == orders[2]
    assert sorted(orders[0]) == list(range(50))
    assert ShuffleSampler(5, shuffle=False).__iter__().__next__() == 0


async def test_worker_seeds_repeat_with_the_seed(version: Version) -> None:
    def draws(seed: int) -> list[float]:
        loader = make_loader(
            dataset(version, transform=_random_tag), batch_size=2, seed=seed, num_workers=2
        )
        return [float(x) for images, _ in loader for x in images]

    assert draws(5) == draws(5)
    assert draws(5) != draws(6)


def _random_tag(image: object) -> torch.Tensor:
    import numpy as np

    return torch.tensor(np.random.random())


async def test_labels_target_collates_targets_as_lists(version: Version) -> None:
    loader = make_loader(dataset(version, target="labels"), batch_size=4, shuffle=False)
    images, targets = next(iter(loader))
    assert images.shape == (4, 3, 8, 8)
    assert targets == [item.labels for item in version.items[:4]]


async def test_cold_loader_prefetches_from_a_large_version(tmp_path: Path) -> None:
    version = await make_version(tmp_path, n=64)
    ds = dataset(version)
    loader = make_loader(ds, batch_size=8, num_workers=2, prefetch_items=32)
    assert sum(len(t) for _, t in batches(loader)) == 64
    assert all(ds.cache.contains(item.blob) for item in version.items)
