"""The soak's memory criterion on made-up series (no services): a process that keeps climbing
fails it; one that breathes with its load, or rose while warming up, passes."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.soak import LEVEL_FLOOR_MIB, levelling


def series(shape: Sequence[float], every_s: float = 1.0) -> list[tuple[float, float]]:
    return [(i * every_s, mib) for i, mib in enumerate(shape)]


def test_steady_climb_is_not_levelled() -> None:
    points = series([300 + 2.0 * i for i in range(90)])  # +2 MiB/s
    verdict = levelling(points, 0, 89)
    assert verdict["levelled"] is False
    assert verdict["peak_growth_mib"] > LEVEL_FLOOR_MIB
    assert math.isclose(verdict["slope_mib_per_min"], 120.0, rel_tol=0.01)


def test_rise_then_plateau_with_load_spikes_is_levelled() -> None:
    shape = [100 + min(i, 20) * 10 + (15 if i % 20 == 5 else 0) for i in range(90)]
    verdict = levelling(series(shape), 0, 89)
    assert verdict["levelled"] is True
    assert verdict["peak_growth_mib"] <= verdict["allowed_mib"]


def test_rare_spike_seen_in_the_first_third_is_levelled() -> None:
    # A training worker: flat around 520 MiB, +55 MiB for a few samples now and then (the
    # middle third happened to see none).
    shape = [520.0] * 90
    for i in (10, 11, 12, 75, 76, 77):
        shape[i] = 575.0
    assert levelling(series(shape), 0, 89)["levelled"] is True


def test_rising_level_below_the_old_peak_is_not_levelled() -> None:
    # Spikes early on hide the peak growth; the median of the last third still gives it away.
    shape = [500.0 + (200 if i < 5 else 0) for i in range(60)] + [560.0] * 30
    verdict = levelling(series(shape), 0, 89)
    assert verdict["peak_growth_mib"] < 0
    assert verdict["median_growth_mib"] == 60.0
    assert verdict["levelled"] is False


def test_large_process_may_grow_by_its_fraction_not_more() -> None:
    flat = [1000.0] * 60
    assert levelling(series(flat + [1040.0] * 30), 0, 89)["levelled"] is True  # 4 %
    assert levelling(series(flat + [1080.0] * 30), 0, 89)["levelled"] is False  # 8 %


def test_samples_outside_the_window_do_not_count() -> None:
    warm_up = [50.0 + 10 * i for i in range(30)]
    steady = [400.0] * 60
    verdict = levelling(series(warm_up + steady), 30, 89)
    assert verdict["levelled"] is True and verdict["first_mib"] == 400.0


def test_too_few_samples_is_no_verdict() -> None:
    assert levelling(series([1.0, 2.0, 3.0]), 0, 2)["levelled"] is False
