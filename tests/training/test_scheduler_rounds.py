"""Property tests of scheduling over many rounds, through the service's own glue
(``executor.decide`` over job rows per pool): jobs arrive and finish between rounds, and in
every round DRF's guarantees hold. ``tests/unit/training/test_scheduler_plan.py`` checks one
``plan`` call; this checks what the service does with it round after round."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from kiln_training import scheduler
from kiln_training.executor import PoolState, decide
from kiln_training.lifecycle import TrainingSettings
from kiln_training.models import JobStatus, TrainingJob

CAPACITY = {"cpu": 8.0, "memory": 16.0}
TEAMS = ["a", "b", "c"]
# No aging or reservation: the properties are those of plain DRF with backfilling.
POLICY = TrainingSettings(aging_interval_s=10**9, reservation_after_s=10**9)
T0 = datetime(2026, 1, 1, tzinfo=UTC)

demands = st.fixed_dictionaries(
    {"cpu": st.sampled_from([1.0, 2.0, 3.0]), "memory": st.sampled_from([1.0, 2.0, 4.0])}
)
arrival = st.tuples(st.sampled_from(TEAMS), demands, st.integers(0, 2))
rounds = st.lists(
    st.tuples(st.lists(arrival, max_size=6), st.lists(st.integers(0, 50), max_size=3)),
    min_size=1,
    max_size=8,
)
weights = st.fixed_dictionaries({t: st.sampled_from([1.0, 2.0]) for t in TEAMS})


def row(n: int, team: str, demand: dict[str, float], priority: int) -> TrainingJob:
    return TrainingJob(
        id=f"j{n:04d}",
        team=team,
        resources=demand,
        priority=priority,
        queued_at=T0 + timedelta(seconds=n),
        status=JobStatus.queued,
        model_name="m",
        dataset_id="d",
        dataset_version=1,
        dataset_version_id="v",
        manifest_key="k",
        template="image-cnn",
    )


def usage(jobs: list[TrainingJob]) -> dict[str, scheduler.Resources]:
    held: dict[str, scheduler.Resources] = {}
    for job in jobs:
        held[job.team] = held.get(job.team, scheduler.Resources()).add(job.resources)
    return held


def total_of(jobs: list[TrainingJob]) -> scheduler.Resources:
    total = scheduler.Resources()
    for job in jobs:
        total = total.add(job.resources)
    return total


def weighted_share(
    held: scheduler.Resources, weight: float, capacity: scheduler.Resources
) -> float:
    return held.dominant_share(capacity) / weight


@settings(max_examples=60, deadline=None)
@given(rounds, weights)
def test_every_round_respects_capacity_leaves_nothing_fitting_idle_and_follows_drf(
    script: list[tuple[list[tuple[str, dict[str, float], int]], list[int]]],
    team_weights: dict[str, float],
) -> None:
    capacity = scheduler.Resources(CAPACITY)
    teams = [scheduler.Team(t, weight=w) for t, w in team_weights.items()]
    running: list[TrainingJob] = []
    queued: list[TrainingJob] = []
    n = 0
    for step, (arrivals, finishing) in enumerate(script):
        for team, demand, priority in arrivals:
            queued.append(row(n, team, demand, priority))
            n += 1
        for index in finishing:  # some running jobs end between rounds
            if running:
                running.pop(index % len(running))
        now = T0 + timedelta(seconds=1000 + step)
        pools = {"cpu": PoolState(capacity, list(running), list(queued))}
        decision = decide(pools, teams, now, POLICY).get("cpu")
        if decision is None:  # nothing queued or running: nothing to decide
            assert not queued and not running
            continue

        by_id = {j.id: j for j in queued}
        held = usage(running)
        free = capacity.subtract(total_of(running))
        waiting = dict(by_id)
        for chosen in decision.started:
            job = by_id[chosen.id]
            del waiting[job.id]
            # DRF: nobody whose weighted share is lower had a waiting job that fit.
            mine = weighted_share(
                held.get(job.team, scheduler.Resources()), team_weights[job.team], capacity
            )
            for other in waiting.values():
                if other.team == job.team:
                    continue
                theirs = weighted_share(
                    held.get(other.team, scheduler.Resources()), team_weights[other.team], capacity
                )
                fits = scheduler.Resources(other.resources).fits(free)
                assert not (fits and theirs < mine - 1e-9), (job.id, other.id)
            held[job.team] = held.get(job.team, scheduler.Resources()).add(job.resources)
            free = free.subtract(job.resources)
            running.append(job)
            queued.remove(job)

        assert total_of(running).fits(capacity)  # never more than the capacity
        for job in queued:  # nothing that fits is left waiting
            assert not scheduler.Resources(job.resources).fits(free), job.id
