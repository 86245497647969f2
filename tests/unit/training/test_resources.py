"""Resources: arithmetic, fitting with float slack, dominant shares."""

from __future__ import annotations

import math

import pytest

from kiln_training.scheduler import Resources, ZeroCapacityError


def test_add_and_subtract_work_over_the_union_of_kinds() -> None:
    a = Resources(cpu=2, memory=4)
    b = Resources(memory=1, gpu=1)
    assert a.add(b) == Resources(cpu=2, memory=5, gpu=1)
    assert a.subtract(b) == Resources(cpu=2, memory=3)


def test_subtract_floors_an_over_committed_kind_at_zero() -> None:
    assert Resources(cpu=1).subtract(Resources(cpu=3)) == Resources(cpu=0)


def test_a_missing_kind_counts_as_zero_also_for_equality() -> None:
    assert Resources(cpu=1, gpu=0) == Resources(cpu=1)
    assert hash(Resources(cpu=1, gpu=0)) == hash(Resources(cpu=1))
    assert Resources(cpu=1).amount("gpu") == 0.0


def test_fits_tolerates_float_noise_but_not_a_real_excess() -> None:
    assert Resources(cpu=0.1 + 0.2).fits(Resources(cpu=0.3))
    assert not Resources(cpu=0.31).fits(Resources(cpu=0.3))
    assert Resources(cpu=1, gpu=0).fits(Resources(cpu=1))
    assert Resources(cpu=1, gpu=1).exceeding(Resources(cpu=0.5)) == ("cpu", "gpu")


def test_dominant_share_is_the_largest_fraction_of_any_kind() -> None:
    capacity = Resources(cpu=9, memory=18)
    assert Resources(cpu=1, memory=4).dominant_share(capacity) == pytest.approx(2 / 9)
    assert Resources(cpu=1, memory=4).dominant_resource(capacity) == "memory"
    assert Resources(cpu=3, memory=1).dominant_resource(capacity) == "cpu"
    assert Resources().dominant_share(capacity) == 0.0


def test_dominant_share_of_a_kind_the_capacity_lacks_is_a_clear_error() -> None:
    with pytest.raises(ZeroCapacityError, match="gpu"):
        Resources(cpu=1, gpu=1).dominant_share(Resources(cpu=9, gpu=0))


@pytest.mark.parametrize("amount", [-1.0, math.nan, math.inf])
def test_amounts_must_be_finite_and_non_negative(amount: float) -> None:
    with pytest.raises(ValueError, match="cpu"):
        Resources(cpu=amount)
