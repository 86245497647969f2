"""plan: DRF between teams, quotas, priority and aging within a team, the reservation against
starvation, and the reasons reported for every waiting job."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln_training.scheduler import (
    Decision,
    Job,
    Resources,
    SchedulingPolicy,
    Team,
    WaitingJob,
    WaitReason,
    plan,
    simulate_drf,
)

R = Resources
NO_AGING = SchedulingPolicy(aging_interval_s=None, reservation_after_s=None)


def job(id: str, team: str, priority: int = 0, submitted_at: float = 0.0, **demand: float) -> Job:
    return Job(id=id, team=team, demand=R(demand), priority=priority, submitted_at=submitted_at)


def ids(decision: Decision) -> list[str]:
    return [j.id for j in decision.started]


def waiting(decision: Decision) -> dict[str, WaitingJob]:
    return {w.job.id: w for w in decision.waiting}


def test_queues_of_equal_jobs_reproduce_the_drf_paper_allocation() -> None:
    queued = [job(f"a{i}", "a", cpu=1, memory=4) for i in range(6)]
    queued += [job(f"b{i}", "b", cpu=3, memory=1) for i in range(6)]
    decision = plan(R(cpu=9, memory=18), [], queued, [], now=0)
    assert Counter(j.team for j in decision.started) == {"a": 3, "b": 2}
    # Lowest dominant share first, ties by team name: a, b, a, b, a.
    assert ids(decision) == ["a0", "b0", "a1", "b1", "a2"]
    assert decision.dominant_shares == pytest.approx({"a": 2 / 3, "b": 2 / 3})


def test_running_jobs_count_towards_a_teams_share() -> None:
    running = [job("a-old", "a", cpu=2)]
    queued = [job("a1", "a", cpu=1), job("b1", "b", cpu=1), job("b2", "b", cpu=1)]
    decision = plan(R(cpu=4), running, queued, [], now=0)
    assert ids(decision) == ["b1", "b2"]
    assert waiting(decision)["a1"].reason is WaitReason.INSUFFICIENT_CAPACITY


def test_weights_scale_a_teams_share() -> None:
    queued = [job(f"a{i}", "a", cpu=1) for i in range(8)]
    queued += [job(f"b{i}", "b", cpu=1) for i in range(8)]
    decision = plan(R(cpu=6), [], queued, [Team("a", weight=2)], now=0)
    assert Counter(j.team for j in decision.started) == {"a": 4, "b": 2}
    assert decision.weighted_shares == pytest.approx({"a": 4 / 6 / 2, "b": 2 / 6})


def test_quota_caps_what_a_team_holds_and_running_jobs_count() -> None:
    team = Team("a", quota=R(cpu=3))
    running = [job("a0", "a", cpu=1)]
    queued = [job(f"a{i}", "a", submitted_at=i, cpu=1) for i in range(1, 5)]
    decision = plan(R(cpu=16), running, queued, [team], now=10, policy=NO_AGING)
    assert ids(decision) == ["a1", "a2"]
    over = waiting(decision)["a3"]
    assert (over.reason, over.resource) == (WaitReason.OVER_QUOTA, "cpu")
    assert "holds 3 of its 3 cpu quota" in over.detail


def test_a_kind_the_quota_does_not_name_is_not_capped() -> None:
    team = Team("a", quota=R(gpu=1))
    queued = [job(f"a{i}", "a", cpu=2) for i in range(3)]
    assert len(plan(R(cpu=8, gpu=1), [], queued, [team], now=0).started) == 3


def test_priority_orders_jobs_within_a_team_then_submit_time_then_id() -> None:
    queued = [
        job("low", "a", priority=0, submitted_at=0, cpu=1),
        job("high-late", "a", priority=5, submitted_at=9, cpu=1),
        job("high-early-b", "a", priority=5, submitted_at=1, cpu=1),
        job("high-early-a", "a", priority=5, submitted_at=1, cpu=1),
    ]
    decision = plan(R(cpu=3), [], queued, [], now=10, policy=NO_AGING)
    assert ids(decision) == ["high-early-a", "high-early-b", "high-late"]
    assert waiting(decision)["low"].position == 1


def test_a_smaller_job_backfills_when_the_first_in_line_does_not_fit() -> None:
    running = [job("run", "b", cpu=2)]
    queued = [job("big", "a", priority=9, cpu=4), job("small", "a", priority=0, cpu=1)]
    decision = plan(R(cpu=4), running, queued, [], now=0, policy=NO_AGING)
    assert ids(decision) == ["small"]
    assert waiting(decision)["big"].reason is WaitReason.INSUFFICIENT_CAPACITY


def test_aging_raises_effective_priority_one_step_per_interval() -> None:
    policy = SchedulingPolicy(aging_interval_s=60)
    old = job("old", "a", priority=1, submitted_at=0)
    assert policy.effective_priority(old, now=59) == 1
    assert policy.effective_priority(old, now=60) == 2
    assert policy.effective_priority(old, now=601) == 11
    assert NO_AGING.effective_priority(old, now=601) == 1


def _run_cluster(
    capacity: Resources,
    policy: SchedulingPolicy,
    arrivals: dict[float, list[tuple[Job, float]]],
    running: list[tuple[Job, float]],
    until: float,
    tick: float = 10.0,
    teams: tuple[Team, ...] = (),
) -> dict[str, float]:
    """Drive plan through time: at every tick, finished jobs leave, arrivals join the queue, and
    the decision's jobs start for their duration. Returns the start time of every started job."""
    now = 0.0
    queue: dict[str, tuple[Job, float]] = {}
    ends: dict[str, tuple[Job, float]] = {j.id: (j, end) for j, end in running}
    started: dict[str, float] = {}
    while now <= until:
        ends = {i: (j, end) for i, (j, end) in ends.items() if end > now}
        for item in arrivals.get(now, []):
            queue[item[0].id] = item
        decision = plan(
            capacity,
            [j for j, _ in ends.values()],
            [j for j, _ in queue.values()],
            teams,
            now,
            policy,
        )
        used = R()
        for j, _ in ends.values():
            used = used.add(j.demand)
        for j in decision.started:
            used = used.add(j.demand)
            _, duration = queue.pop(j.id)
            ends[j.id] = (j, now + duration)
            started[j.id] = now
        assert used.fits(capacity)
        now += tick
    return started


def test_aging_eventually_starts_an_old_low_priority_job_behind_a_stream_of_urgent_ones() -> None:
    # One cpu; every 10 s a new priority-3 job arrives and runs for 10 s. Without aging the
    # priority-0 job waits forever; with +1 per 10 s it ties the newcomers at 30 s and wins
    # on submit time.
    old = job("old", "a", priority=0, submitted_at=0, cpu=1)
    arrivals = {
        float(t): [(job(f"urgent{t}", "a", priority=3, submitted_at=t, cpu=1), 10.0)]
        for t in range(0, 500, 10)
    }
    arrivals[0.0].append((old, 10.0))
    never = _run_cluster(R(cpu=1), NO_AGING, arrivals, [], until=400)
    assert "old" not in never
    aging = SchedulingPolicy(aging_interval_s=10, reservation_after_s=None)
    aged = _run_cluster(R(cpu=1), aging, arrivals, [], until=400)
    assert aged["old"] == 30.0


def _small_stream() -> tuple[dict[float, list[tuple[Job, float]]], list[tuple[Job, float]]]:
    # Four cpus, always one freeing per tick and one new small job taking it: a 4-cpu job
    # never finds them all free at once.
    running = [(job(f"warm{i}", "small", cpu=1), 10.0 * (i + 1)) for i in range(4)]
    arrivals = {
        float(t): [(job(f"s{t}", "small", submitted_at=t, cpu=1), 40.0)]
        for t in range(10, 2000, 10)
    }
    arrivals.setdefault(0.0, []).append((job("big", "big", submitted_at=0, cpu=4), 50.0))
    return arrivals, running


def test_without_a_reservation_a_large_job_starves_behind_small_ones() -> None:
    arrivals, running = _small_stream()
    policy = SchedulingPolicy(aging_interval_s=10, reservation_after_s=None)
    started = _run_cluster(R(cpu=4), policy, arrivals, running, until=1000)
    assert "big" not in started


def test_a_reservation_drains_capacity_for_a_job_that_waited_too_long() -> None:
    arrivals, running = _small_stream()
    policy = SchedulingPolicy(aging_interval_s=10, reservation_after_s=60)
    started = _run_cluster(R(cpu=4), policy, arrivals, running, until=1000)
    # Reserved from 60 s on; the small jobs started before then end by 60 + 40 s.
    assert 60 <= started["big"] <= 100
    assert len([i for i in started if i.startswith("s")]) > 50


def test_the_reservation_holder_is_reported_and_blocks_others() -> None:
    policy = SchedulingPolicy(aging_interval_s=None, reservation_after_s=60)
    running = [job("r1", "small", cpu=2)]
    queued = [
        job("big", "big", submitted_at=0, cpu=4),
        job("s1", "small", submitted_at=50, cpu=1),
        job("g1", "gpu-team", submitted_at=50, gpu=1),
    ]
    decision = plan(R(cpu=4, gpu=1), running, queued, [], now=100, policy=policy)
    # The gpu job does not touch what is held for big, so it may start.
    assert ids(decision) == ["g1"]
    assert decision.reserved_for == "big"
    by_id = waiting(decision)
    assert by_id["big"].holds_reservation and by_id["big"].position == 1
    assert by_id["big"].reason is WaitReason.INSUFFICIENT_CAPACITY
    s1 = by_id["s1"]
    assert (s1.reason, s1.resource, s1.blocked_by_job) == (
        WaitReason.CAPACITY_RESERVED,
        "cpu",
        "big",
    )


def test_others_must_leave_room_so_the_holder_starts_once_it_fits() -> None:
    policy = SchedulingPolicy(aging_interval_s=None, reservation_after_s=60)
    running = [job("b-run", "b", cpu=1)]
    queued = [job("a1", "a", submitted_at=90, cpu=2), job("b-big", "b", submitted_at=0, cpu=2)]
    decision = plan(R(cpu=3), running, queued, [], now=100, policy=policy)
    # By share team a (0) goes before team b (1/3), but a1 would take what b-big needs.
    assert ids(decision) == ["b-big"]
    assert decision.reserved_for is None
    assert waiting(decision)["a1"].reason is WaitReason.INSUFFICIENT_CAPACITY


def test_the_holder_keeps_its_fair_turn_when_there_is_room_for_both() -> None:
    policy = SchedulingPolicy(aging_interval_s=None, reservation_after_s=60)
    running = [job("b-run", "b", cpu=1)]
    queued = [job("a1", "a", submitted_at=90, cpu=1), job("b-big", "b", submitted_at=0, cpu=2)]
    decision = plan(R(cpu=4), running, queued, [], now=100, policy=policy)
    assert ids(decision) == ["a1", "b-big"]


def test_after_the_holder_starts_the_next_oldest_job_takes_the_reservation() -> None:
    policy = SchedulingPolicy(aging_interval_s=None, reservation_after_s=60)
    queued = [
        job("first", "a", submitted_at=0, cpu=2),
        job("second", "b", submitted_at=10, cpu=4),
        job("fresh", "c", submitted_at=99, cpu=1),
    ]
    decision = plan(R(cpu=4), [], queued, [], now=100, policy=policy)
    # first starts; second (4 cpu) now waits for 2 more and holds them, so fresh may not start.
    assert ids(decision) == ["first"]
    assert decision.reserved_for == "second"
    fresh = waiting(decision)["fresh"]
    assert (fresh.reason, fresh.blocked_by_job) == (WaitReason.CAPACITY_RESERVED, "second")


def test_the_reservation_also_keeps_quota_room_for_the_holder() -> None:
    policy = SchedulingPolicy(aging_interval_s=None, reservation_after_s=60)
    team = Team("a", quota=R(gpu=4))
    running = [job("a-run", "a", gpu=2)]
    queued = [job("a-big", "a", submitted_at=0, gpu=4), job("a-small", "a", submitted_at=90, gpu=1)]
    decision = plan(R(gpu=8), running, queued, [team], now=100, policy=policy)
    assert ids(decision) == []
    by_id = waiting(decision)
    assert by_id["a-big"].reason is WaitReason.OVER_QUOTA
    assert by_id["a-small"].reason is WaitReason.CAPACITY_RESERVED
    assert by_id["a-small"].resource == "gpu"


def test_a_job_that_can_never_run_gets_no_reservation() -> None:
    policy = SchedulingPolicy(aging_interval_s=None, reservation_after_s=60)
    queued = [job("huge", "a", submitted_at=0, cpu=99), job("ok", "b", submitted_at=90, cpu=1)]
    decision = plan(R(cpu=4), [], queued, [], now=100, policy=policy)
    assert ids(decision) == ["ok"]
    assert decision.reserved_for is None


def test_every_waiting_job_gets_a_reason_naming_the_resource_and_who_is_ahead() -> None:
    teams = [Team("d", quota=R(cpu=1)), Team("e", quota=R(gpu=1))]
    running = [job("b-run", "b", cpu=3), job("e-run", "e", gpu=1)]
    queued = [
        job("a1", "a", priority=5, cpu=2),
        job("a2", "a", priority=1, cpu=2),
        job("b1", "b", cpu=2),
        job("c1", "c", gpu=3),
        job("c2", "c", gpu=1),
        job("d1", "d", cpu=2),
        job("e1", "e", gpu=1),
    ]
    decision = plan(R(cpu=4, gpu=2), running, queued, teams, now=0, policy=NO_AGING)
    assert ids(decision) == ["c2"]
    by_id = waiting(decision)
    expected = {
        "a1": (WaitReason.INSUFFICIENT_CAPACITY, "cpu", None, None),
        "a2": (WaitReason.BEHIND_HIGHER_PRIORITY, "cpu", "a1", "a"),
        "b1": (WaitReason.FAIR_SHARE, "cpu", "a1", "a"),
        "c1": (WaitReason.EXCEEDS_CAPACITY, "gpu", None, None),
        "d1": (WaitReason.EXCEEDS_QUOTA, "cpu", None, None),
        "e1": (WaitReason.OVER_QUOTA, "gpu", None, None),
    }
    got = {i: (w.reason, w.resource, w.blocked_by_job, w.blocked_by_team) for i, w in by_id.items()}
    assert got == expected
    assert by_id["a1"].detail == "needs 2 cpu, 1 free"
    assert "team a has the lower weighted dominant share" in by_id["b1"].detail
    assert sorted(w.position for w in decision.waiting) == list(range(1, 7))
    # Line order: a1 and a2 (share 0) before b1 (3/4 held); jobs that can never run last.
    assert by_id["a1"].position < by_id["b1"].position
    assert {by_id["c1"].position, by_id["d1"].position} == {5, 6}


def test_the_decision_does_not_depend_on_input_order() -> None:
    rng = random.Random(7)
    queued = [
        job(
            f"j{i}",
            rng.choice("abc"),
            priority=rng.randrange(3),
            submitted_at=rng.randrange(100),
            cpu=rng.choice([1, 2, 4]),
            gpu=rng.choice([0, 0, 1]),
        )
        for i in range(60)
    ]
    teams = [Team("a", weight=2), Team("b", quota=R(cpu=6)), Team("c")]
    first = plan(R(cpu=16, gpu=3), [], queued, teams, now=500)
    for _ in range(5):
        rng.shuffle(queued)
        rng.shuffle(teams)
        assert plan(R(cpu=16, gpu=3), [], queued, teams, now=500) == first


def test_duplicate_job_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="x"):
        plan(R(cpu=1), [job("x", "a", cpu=1)], [job("x", "a", cpu=1)], [], now=0)


def test_team_weights_and_policy_intervals_must_be_positive() -> None:
    with pytest.raises(ValueError, match="weight"):
        Team("a", weight=0)
    with pytest.raises(ValueError, match="aging_interval_s"):
        SchedulingPolicy(aging_interval_s=0)


def test_a_running_job_on_a_kind_the_capacity_lost_does_not_crash_planning() -> None:
    running = [job("g", "a", gpu=1)]
    decision = plan(R(cpu=2), running, [job("a1", "a", cpu=1), job("b1", "b", cpu=1)], [], now=0)
    assert ids(decision) == ["b1", "a1"]
    assert decision.weighted_shares["a"] == math.inf


# Properties -------------------------------------------------------------------------------

KINDS = ("cpu", "memory", "gpu")
TEAM_NAMES = ("a", "b", "c")


@st.composite
def clusters(draw: st.DrawFn) -> tuple[Resources, list[Job], list[Job], list[Team], float]:
    capacity = R({k: float(draw(st.integers(1, 16))) for k in KINDS})
    teams = []
    for name in TEAM_NAMES:
        quota = None
        if draw(st.booleans()):
            quota = R(
                {
                    k: float(draw(st.integers(1, 16)))
                    for k in draw(st.sets(st.sampled_from(KINDS), min_size=1))
                }
            )
        teams.append(Team(name, weight=draw(st.sampled_from([0.5, 1.0, 2.0])), quota=quota))
    demand = st.fixed_dictionaries({k: st.integers(0, 6).map(float) for k in KINDS}).map(R)
    n = draw(st.integers(0, 30))
    jobs = [
        Job(
            id=f"j{i}",
            team=draw(st.sampled_from(TEAM_NAMES)),
            demand=draw(demand),
            priority=draw(st.integers(0, 3)),
            submitted_at=float(draw(st.integers(0, 1000))),
        )
        for i in range(n)
    ]
    # Running jobs: a prefix that fits the capacity together.
    running: list[Job] = []
    used = R()
    for j in jobs[: draw(st.integers(0, n))]:
        if used.add(j.demand).fits(capacity):
            running.append(j)
            used = used.add(j.demand)
    queued = [j for j in jobs if j not in running]
    return capacity, running, queued, teams, 1000.0


def _usage(jobs: list[Job]) -> dict[str, Resources]:
    usage: dict[str, Resources] = {}
    for j in jobs:
        usage[j.team] = usage.get(j.team, R()).add(j.demand)
    return usage


def _total(jobs: list[Job]) -> Resources:
    total = R()
    for j in jobs:
        total = total.add(j.demand)
    return total


def _within_quota(team: Team, held: Resources, demand: Resources) -> bool:
    # Only the kinds the job asks for are checked, as in the scheduler.
    if team.quota is None:
        return True
    after = held.add(demand)
    return all(after.amount(k) <= team.quota[k] for k in team.quota if demand.amount(k) > 0)


POLICIES = st.sampled_from(
    [
        NO_AGING,
        SchedulingPolicy(aging_interval_s=100, reservation_after_s=None),
        SchedulingPolicy(aging_interval_s=100, reservation_after_s=500),
    ]
)


@settings(max_examples=300, deadline=None)
@given(clusters(), POLICIES)
def test_starts_never_exceed_capacity_or_quota_and_every_job_is_accounted_for(
    cluster: tuple[Resources, list[Job], list[Job], list[Team], float], policy: SchedulingPolicy
) -> None:
    capacity, running, queued, teams, now = cluster
    decision = plan(capacity, running, queued, teams, now, policy)
    assert _total(running + list(decision.started)).fits(capacity)
    by_name = {t.name: t for t in teams}
    held = list(running)
    for started in decision.started:
        assert _within_quota(
            by_name[started.team], _usage(held).get(started.team, R()), started.demand
        )
        held.append(started)
    assert Counter(
        [j.id for j in decision.started] + [w.job.id for w in decision.waiting]
    ) == Counter(j.id for j in queued)
    assert [w.position for w in decision.waiting] == list(range(1, len(decision.waiting) + 1))


@settings(max_examples=300, deadline=None)
@given(clusters(), POLICIES)
def test_no_capacity_is_left_idle_while_a_waiting_job_fits(
    cluster: tuple[Resources, list[Job], list[Job], list[Team], float], policy: SchedulingPolicy
) -> None:
    capacity, running, queued, teams, now = cluster
    decision = plan(capacity, running, queued, teams, now, policy)
    free = capacity.subtract(_total(running + list(decision.started)))
    assert decision.free == free
    usage = _usage(running + list(decision.started))
    by_name = {t.name: t for t in teams}
    for w in decision.waiting:
        fits = w.job.demand.fits(free) and _within_quota(
            by_name[w.job.team], usage.get(w.job.team, R()), w.job.demand
        )
        if fits:
            # Only a reservation for a job that waited too long may hold a fitting job back.
            assert w.reason is WaitReason.CAPACITY_RESERVED and decision.reserved_for is not None


@settings(max_examples=300, deadline=None)
@given(
    clusters(),
    st.sampled_from([NO_AGING, SchedulingPolicy(aging_interval_s=100, reservation_after_s=None)]),
)
def test_no_share_grows_while_a_lower_share_team_has_a_job_that_fits(
    cluster: tuple[Resources, list[Job], list[Job], list[Team], float], policy: SchedulingPolicy
) -> None:
    # Replay the starts in order: at each one, every other team that could have started a
    # queued job then must not have had a lower weighted dominant share.
    capacity, running, queued, teams, now = cluster
    decision = plan(capacity, running, queued, teams, now, policy)
    by_name = {t.name: t for t in teams}
    held = list(running)
    pending = {j.id: j for j in queued}

    def share(team: str) -> float:
        usage = _usage(held).get(team, R())
        return round(usage.dominant_share(capacity) / by_name[team].weight, 12)

    for started in decision.started:
        free = capacity.subtract(_total(held))
        usage = _usage(held)
        for other in TEAM_NAMES:
            if other == started.team:
                continue
            could = any(
                j.team == other
                and j.demand.fits(free)
                and _within_quota(by_name[other], usage.get(other, R()), j.demand)
                for j in pending.values()
            )
            if could:
                assert share(other) >= share(started.team)
        held.append(started)
        del pending[started.id]


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries({k: st.integers(1, 20).map(float) for k in KINDS}).map(R),
    st.dictionaries(
        st.sampled_from(TEAM_NAMES),
        st.fixed_dictionaries({k: st.integers(0, 6).map(float) for k in KINDS})
        .map(R)
        .filter(lambda d: not d.is_zero()),
        min_size=1,
    ),
    st.dictionaries(st.sampled_from(TEAM_NAMES), st.sampled_from([0.5, 1.0, 2.0])),
)
def test_plan_over_queues_of_equal_jobs_matches_simulate_drf(
    capacity: Resources, demands: dict[str, Resources], weights: dict[str, float]
) -> None:
    weights = {t: w for t, w in weights.items() if t in demands}
    queued = []
    for team, demand in demands.items():
        most = min(math.floor(capacity.amount(k) / a) for k, a in demand.items() if a > 0)
        queued += [Job(f"{team}{i:03d}", team, demand) for i in range(most + 1)]
    teams = [Team(t, weight=w) for t, w in weights.items()]
    decision = plan(capacity, [], queued, teams, now=0, policy=NO_AGING)
    expected = simulate_drf(capacity, demands, weights)
    got = Counter(j.team for j in decision.started)
    assert {t: got.get(t, 0) for t in demands} == expected.allocations
