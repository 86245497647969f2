"""Deterministic train/val/test assignment, stratified by label.

What holds for :func:`assign_splits`:

- The result depends only on the set of item ids, their labels, the ratios and the seed: not on
  input order. Within a stratum items are ordered by ``sha256(seed, item_id)``, and the first
  ``n_train`` go to train, the next ``n_val`` to val, the rest to test.
- Each stratum's split counts are within 1 of ``ratio * stratum size`` (largest remainder) and
  add up to the stratum size. Leftover units are handed out so the dataset-wide totals also match
  their own largest-remainder targets whenever some rounding of the strata allows it.
- Strata: with ``stratify`` an item's stratum is its rarest label (fewest items carrying it, ties
  by name), so rare classes reach val and test; unlabelled items form a stratum of their own.
- Adding items without ``existing``: an old item keeps its split unless it sits near a boundary
  of its stratum's hash order (rounding moves a boundary by about one item per stratum) or the
  new items change which of its labels is rarest. To guarantee that old items never move, pass
  their splits as ``existing``: they are kept as they are and only new items are assigned,
  filling each stratum towards its targets.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TypedDict, get_args

from kiln_core.manifest import ManifestItem, Split

SPLITS: tuple[Split, ...] = get_args(Split)
UNLABELLED = "(unlabelled)"
_UNLABELLED_STRATUM = "\x00unlabelled"  # cannot clash with a label someone named "(unlabelled)"


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    if len(ratios) != len(SPLITS):
        raise ValueError(f"ratios must give {len(SPLITS)} values, for {', '.join(SPLITS)}")
    if any(not math.isfinite(r) or r < 0 for r in ratios):
        raise ValueError("ratios must be finite and not negative")
    if abs(sum(ratios) - 1.0) > 1e-9:
        raise ValueError(f"ratios must sum to 1, not {sum(ratios)}")
    return tuple(float(r) for r in ratios)


def _order_key(seed: int, item_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{item_id}".encode()).digest()


def _largest_remainder(total: int, ratios: Sequence[float]) -> list[int]:
    quotas = [total * r for r in ratios]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(ratios)), key=lambda k: (-(quotas[k] - counts[k]), k))
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts


def _stratum_counts(sizes: Mapping[str, int], ratios: Sequence[float]) -> dict[str, list[int]]:
    """Per-stratum counts within 1 of their quota, steering leftovers to the global targets.

    Each stratum rounds its quotas down and owes ``left`` units, each to a different split where
    its quota has a fractional part. Which ones is a small transport problem: a greedy pass by
    largest fraction, then augmenting paths (move another stratum's unit to a third split) for
    strata the greedy pass left stuck, so the dataset totals reach their largest-remainder targets
    whenever any rounding can.
    """
    splits = range(len(ratios))
    quotas = {s: [n * r for r in ratios] for s, n in sizes.items()}
    counts = {s: [math.floor(q) for q in qs] for s, qs in quotas.items()}
    fraction = {s: [quotas[s][k] - counts[s][k] for k in splits] for s in sizes}
    left = {s: sizes[s] - sum(counts[s]) for s in sizes}
    totals = _largest_remainder(sum(sizes.values()), ratios)
    need = [totals[k] - sum(c[k] for c in counts.values()) for k in splits]
    holders: list[set[str]] = [set() for _ in splits]

    def free(s: str, k: int) -> bool:
        return fraction[s][k] > 0 and s not in holders[k]

    cells = sorted((-fraction[s][k], s, k) for s in sizes for k in splits)
    for _, s, k in cells:
        if left[s] > 0 and need[k] > 0 and free(s, k):
            holders[k].add(s)
            left[s] -= 1
            need[k] -= 1

    def augment(start: str) -> bool:
        # breadth-first over splits; came_from[k] = (previous split, stratum that moved into k)
        came_from: dict[int, tuple[int | None, str]] = {}
        queue = [k for k in splits if free(start, k)]
        for k in queue:
            came_from[k] = (None, start)
        while queue:
            k = queue.pop(0)
            if need[k] > 0:
                need[k] -= 1
                while True:
                    previous, mover = came_from[k]
                    holders[k].add(mover)
                    if previous is None:
                        return True
                    holders[previous].discard(mover)
                    k = previous
            for mover in sorted(holders[k]):
                for nxt in splits:
                    if nxt not in came_from and free(mover, nxt):
                        came_from[nxt] = (k, mover)
                        queue.append(nxt)
        return False

    for s in sorted(sizes):
        while left[s] > 0 and augment(s):
            left[s] -= 1
    for k in splits:
        for s in holders[k]:
            counts[s][k] += 1
    # only when no rounding reaches the global targets: the stratum's own largest remainders
    for s in sizes:
        spare = sorted((k for k in splits if free(s, k)), key=lambda k: (-fraction[s][k], k))
        for k in spare[: left[s]]:
            counts[s][k] += 1
    return counts


def _strata(items: Sequence[ManifestItem], stratify: bool) -> dict[str, str]:
    if not stratify:
        return {item.item_id: "" for item in items}
    frequency: Counter[str] = Counter()
    for item in items:
        frequency.update({label.label for label in item.labels})
    strata: dict[str, str] = {}
    for item in items:
        names = {label.label for label in item.labels}
        strata[item.item_id] = (
            min(names, key=lambda n: (frequency[n], n)) if names else _UNLABELLED_STRATUM
        )
    return strata


def _fill(new: int, targets: Sequence[int], kept: Sequence[int]) -> list[int]:
    """How many of ``new`` items go to each split, given items ``kept`` from before."""
    deficits = [max(t - k, 0) for t, k in zip(targets, kept, strict=True)]
    if sum(deficits) == new:
        return deficits
    # some split already holds more than its target: share the new items by deficit
    return _largest_remainder(new, [d / sum(deficits) for d in deficits])


def assign_splits(
    items: Sequence[ManifestItem],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool = True,
    existing: Mapping[str, Split] | None = None,
) -> dict[str, Split]:
    """Assign every item to train, val or test; see the module docstring for what holds."""
    ratios = _check_ratios(ratios)
    ids = [item.item_id for item in items]
    if len(set(ids)) != len(ids):
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)[:5]
        raise ValueError(f"item ids must be unique, repeated: {duplicates}")
    existing = existing or {}
    unknown = {s for s in existing.values() if s not in SPLITS}
    if unknown:
        raise ValueError(f"unknown splits in existing: {sorted(unknown)}")

    strata = _strata(items, stratify)
    members: defaultdict[str, list[str]] = defaultdict(list)
    for item_id in ids:
        members[strata[item_id]].append(item_id)
    targets = _stratum_counts({s: len(m) for s, m in members.items()}, ratios)

    result: dict[str, Split] = {}
    for stratum, stratum_ids in members.items():
        kept = [i for i in stratum_ids if i in existing]
        new = sorted(
            (i for i in stratum_ids if i not in existing), key=lambda i: _order_key(seed, i)
        )
        kept_counts = [sum(existing[i] == split for i in kept) for split in SPLITS]
        counts = _fill(len(new), targets[stratum], kept_counts) if kept else targets[stratum]
        result.update((i, existing[i]) for i in kept)
        start = 0
        for split, count in zip(SPLITS, counts, strict=True):
            result.update((i, split) for i in new[start : start + count])
            start += count
    return {item_id: result[item_id] for item_id in sorted(result)}


class SplitStatistics(TypedDict):
    totals: dict[str, int]
    labels: dict[str, dict[str, int]]


def split_statistics(
    items: Iterable[ManifestItem], splits: Mapping[str, Split] | None = None
) -> SplitStatistics:
    """Items per split, and items carrying each label per split.

    Splits come from ``splits`` when given, else from each item's ``split``; items with neither
    are counted under ``"unassigned"``. Unlabelled items are counted under ``"(unlabelled)"``.
    """
    totals: Counter[str] = Counter({split: 0 for split in SPLITS})
    labels: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for item in items:
        split = splits.get(item.item_id) if splits is not None else item.split
        name = split or "unassigned"
        totals[name] += 1
        for label in {label.label for label in item.labels} or {UNLABELLED}:
            labels[label][name] += 1
    columns = [*SPLITS, *(["unassigned"] if totals["unassigned"] else [])]
    return {
        "totals": {c: totals[c] for c in columns},
        "labels": {
            label: {c: counter[c] for c in columns} for label, counter in sorted(labels.items())
        },
    }
