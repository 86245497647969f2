"""The growth exponent of bench/scale.py and the tables bench/run_all.py writes from it."""

from __future__ import annotations

import pytest

from bench.run_all import BENCHMARKS, render
from bench.scale import growth_exponent


@pytest.mark.parametrize(("power", "expected"), [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (0.5, 0.5)])
def test_exponent_is_the_log_log_slope(power: float, expected: float) -> None:
    sizes = [1_000, 10_000, 100_000]
    seconds = [3e-6 * n**power for n in sizes]
    assert growth_exponent(sizes, seconds) == pytest.approx(expected, abs=1e-3)


def test_exponent_needs_two_positive_points() -> None:
    assert growth_exponent([1_000], [0.5]) is None
    assert growth_exponent([1_000, 10_000], [0.5, 0.0]) is None


def test_report_shows_each_exponent_against_its_target_and_peer_versions() -> None:
    sizes = [1_000, 10_000]
    figures: dict[str, object] = {"sizes": sizes, "store": "embedded"}
    for op, exponent in (("tasks", 1.5), ("lease", 0.1), ("draft", 1.0)):
        figures[f"{op}_exponent"] = exponent
        for n in sizes:
            figures[f"{op}_{n}_ms"] = 1.0
    entry = {
        "run_at": "2026-12-03 20:00 UTC",
        "seconds": 10.0,
        "load_before": 0.1,
        "load_after": 0.2,
        "args": [],
    }
    results = {
        "scale": {**entry, "figures": figures},
        "annotation": {
            **entry,
            "figures": {"label_studio_version": "9.9.9", "annotation_ratio": 2.0},
        },
    }
    report = render(results, "")
    assert (
        "| scale: annotation tasks for the version, growth exponent | ≤ 1.1 | 1.5 | **miss** |"
        in report
    )
    assert (
        "| scale: one lease (p50), that many tasks waiting, growth exponent | ≤ 0.2 | 0.1 | pass |"
        in report
    )
    assert "| Label Studio | 9.9.9 | annotation |" in report
    assert "| MLflow | not run | registry |" in report
    assert "| annotation: Kiln / Label Studio tasks per second | ≥ 3 | 2 | **miss** |" in report
    assert {b.name for b in BENCHMARKS} >= {"annotation", "registry", "scale", "serving"}
