"""simulate_drf: the published DRF worked example, hand-computed weighted and three-resource
examples, edge cases, and properties of progressive filling."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln_training.scheduler import (
    MAX_SIMULATED_TASKS,
    Resources,
    SimulationResult,
    ZeroCapacityError,
    simulate_drf,
)

R = Resources


def test_reproduces_the_drf_paper_example() -> None:
    # Ghodsi et al., NSDI 2011, section 4: <9 CPU, 18 GB>, A's tasks <1 CPU, 4 GB>, B's
    # <3 CPU, 1 GB>. DRF gives A three tasks <3 CPU, 12 GB> and B two <6 CPU, 2 GB>, both at a
    # dominant share of 2/3.
    result = simulate_drf(R(cpu=9, memory=18), {"a": R(cpu=1, memory=4), "b": R(cpu=3, memory=1)})
    assert result.allocations == {"a": 3, "b": 2}
    assert result.dominant_shares == pytest.approx({"a": 2 / 3, "b": 2 / 3})
    assert result.used == R(cpu=9, memory=14)


def test_the_paper_example_does_not_depend_on_team_order() -> None:
    result = simulate_drf(R(memory=18, cpu=9), {"b": R(memory=1, cpu=3), "a": R(memory=4, cpu=1)})
    assert result.allocations == {"a": 3, "b": 2}


def test_weight_two_doubles_a_teams_claim() -> None:
    # <10 cpu, 50 memory>; a's task <1, 7> (dominant memory, 0.14 a task, weight 2 -> 0.07),
    # b's <2, 1> (dominant cpu, 0.2 a task). By hand, lowest weighted share first:
    # a1 .07 | b1 .2 | a2 .14 | a3 .21 | b2 .4 | a4 .28 | a5 .35 | a6 .42 -> cpu 10/10, mem 44/50;
    # then b (.4) needs cpu 12 > 10 and a needs cpu 11 > 10: both drop out.
    weighted = simulate_drf(
        R(cpu=10, memory=50), {"a": R(cpu=1, memory=7), "b": R(cpu=2, memory=1)}, {"a": 2}
    )
    assert weighted.allocations == {"a": 6, "b": 2}
    assert weighted.dominant_shares == pytest.approx({"a": 0.84, "b": 0.4})
    assert weighted.used == R(cpu=10, memory=44)
    # Unweighted, the same teams: a1 .14 | b1 .2 | a2 .28 | b2 .4 | a3 .42 | b3 .6 | a4 .56,
    # then cpu is full.
    equal = simulate_drf(R(cpu=10, memory=50), {"a": R(cpu=1, memory=7), "b": R(cpu=2, memory=1)})
    assert equal.allocations == {"a": 4, "b": 3}
    assert equal.dominant_shares == pytest.approx({"a": 0.56, "b": 0.6})


def test_three_resources_with_gpu() -> None:
    # <16 cpu, 64 memory, 4 gpu>; ml <2, 8, 1 gpu> (dominant gpu .25), etl <4, 4> (cpu .25),
    # web <1, 8> (memory .125). By hand, ties by name: etl1 | ml1 | web1 | web2 (all at .25) |
    # etl2 | ml2 | web3 | web4 (all at .5) -> cpu 16/16, so nobody fits another task and two
    # gpus stay idle.
    result = simulate_drf(
        R(cpu=16, memory=64, gpu=4),
        {"ml": R(cpu=2, memory=8, gpu=1), "etl": R(cpu=4, memory=4), "web": R(cpu=1, memory=8)},
    )
    assert result.allocations == {"ml": 2, "etl": 2, "web": 4}
    assert result.dominant_shares == pytest.approx({"ml": 0.5, "etl": 0.5, "web": 0.5})
    assert result.used == R(cpu=16, memory=56, gpu=2)


def test_a_team_whose_task_never_fits_gets_nothing_while_the_others_fill_up() -> None:
    result = simulate_drf(
        R(cpu=9, memory=18), {"a": R(cpu=1, memory=4), "huge": R(cpu=10, memory=1)}
    )
    assert result.allocations == {"a": 4, "huge": 0}
    assert result.dominant_shares["huge"] == 0.0


def test_a_single_team_takes_everything_its_tasks_fit_into() -> None:
    result = simulate_drf(R(cpu=9, memory=18), {"a": R(cpu=2, memory=1)})
    assert result.allocations == {"a": 4}


def test_used_lists_every_capacity_kind_even_unused_ones() -> None:
    result = simulate_drf(R(cpu=4, gpu=2), {"a": R(cpu=1)})
    assert dict(result.used) == {"cpu": 4.0, "gpu": 0.0}


def test_a_demand_on_a_zero_capacity_resource_is_a_clear_error() -> None:
    with pytest.raises(ZeroCapacityError, match="team b: gpu is demanded but the capacity"):
        simulate_drf(R(cpu=9, gpu=0), {"a": R(cpu=1), "b": R(cpu=1, gpu=1)})
    with pytest.raises(ZeroCapacityError, match="gpu"):
        simulate_drf(R(cpu=9), {"a": R(cpu=1, gpu=1)})


def test_an_empty_demand_is_rejected_instead_of_taking_unlimited_tasks() -> None:
    with pytest.raises(ValueError, match="demands nothing"):
        simulate_drf(R(cpu=9), {"a": R(cpu=0)})


@pytest.mark.parametrize("weight", [0.0, -1.0, math.inf])
def test_weights_must_be_positive(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        simulate_drf(R(cpu=9), {"a": R(cpu=1)}, {"a": weight})


def test_weights_for_unknown_teams_are_rejected() -> None:
    with pytest.raises(ValueError, match="zz"):
        simulate_drf(R(cpu=9), {"a": R(cpu=1)}, {"zz": 2})


def test_a_plan_of_too_many_tasks_is_refused() -> None:
    with pytest.raises(ValueError, match="coarser units"):
        simulate_drf(R(cpu=MAX_SIMULATED_TASKS + 1), {"a": R(cpu=1)})


# Properties -------------------------------------------------------------------------------

KINDS = ("cpu", "memory", "gpu")
amounts = st.one_of(
    st.integers(min_value=0, max_value=8).map(float),
    st.floats(min_value=0.05, max_value=8, allow_nan=False, allow_infinity=False),
)
capacities = st.fixed_dictionaries(
    {kind: st.integers(min_value=1, max_value=40).map(float) for kind in KINDS}
).map(Resources)
demands_ = st.fixed_dictionaries({kind: amounts for kind in KINDS}).map(Resources)
teams = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    demands_.filter(lambda d: not d.is_zero()),
    min_size=1,
    max_size=4,
)
weight_values = st.sampled_from([0.5, 1.0, 2.0, 3.0])


@st.composite
def scenarios(
    draw: st.DrawFn, weighted: bool = True
) -> tuple[Resources, dict[str, Resources], dict[str, float]]:
    capacity = draw(capacities)
    demands = draw(teams)
    weights = {t: draw(weight_values) for t in demands} if weighted else {}
    return capacity, demands, weights


def _check_sum(result: SimulationResult, demands: dict[str, Resources]) -> None:
    total = Resources()
    for team, tasks in result.allocations.items():
        total = total.add(demands[team].scale(tasks))
    for kind in KINDS:
        assert math.isclose(result.used.amount(kind), total.amount(kind), abs_tol=1e-9)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_allocations_never_exceed_capacity(
    scenario: tuple[Resources, dict[str, Resources], dict[str, float]],
) -> None:
    capacity, demands, weights = scenario
    result = simulate_drf(capacity, demands, weights)
    _check_sum(result, demands)
    assert result.used.fits(capacity)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_the_result_is_pareto_efficient_no_team_fits_another_task(
    scenario: tuple[Resources, dict[str, Resources], dict[str, float]],
) -> None:
    capacity, demands, weights = scenario
    result = simulate_drf(capacity, demands, weights)
    left = capacity.subtract(result.used)
    for team, demand in demands.items():
        assert not demand.fits(left), f"{team} could still run a task in {left}"


@settings(max_examples=300, deadline=None)
@given(scenarios(weighted=False))
def test_with_equal_weights_no_lower_share_team_could_still_fit_a_task(
    scenario: tuple[Resources, dict[str, Resources], dict[str, float]],
) -> None:
    capacity, demands, _ = scenario
    result = simulate_drf(capacity, demands)
    left = capacity.subtract(result.used)
    shares = result.dominant_shares
    for low in demands:
        for high in demands:
            if shares[low] < shares[high] - 1e-9:
                assert not demands[low].fits(left)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_no_share_grew_while_a_lower_share_team_had_a_task_that_fit(
    scenario: tuple[Resources, dict[str, Resources], dict[str, float]],
) -> None:
    # When team u got its last task, what was free was at least what is free now plus that
    # task. Any team t whose weighted share was lower then (it is still lower now, as shares only
    # grow) must not have fitted a task at that moment, so it cannot fit in that amount either.
    capacity, demands, weights = scenario
    result = simulate_drf(capacity, demands, weights)
    left = capacity.subtract(result.used)
    for u, tasks in result.allocations.items():
        if tasks == 0:
            continue
        before = demands[u].scale(tasks - 1).dominant_share(capacity) / weights[u]
        free_then = left.add(demands[u])
        for t in demands:
            now_t = result.dominant_shares[t] / weights[t]
            if t != u and now_t < before - 1e-9:
                assert not demands[t].fits(free_then), (u, t)


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_the_result_does_not_depend_on_the_order_teams_are_given(
    scenario: tuple[Resources, dict[str, Resources], dict[str, float]],
) -> None:
    capacity, demands, weights = scenario
    forward = simulate_drf(capacity, demands, weights)
    backward = simulate_drf(capacity, dict(reversed(list(demands.items()))), weights)
    assert forward.allocations == backward.allocations
