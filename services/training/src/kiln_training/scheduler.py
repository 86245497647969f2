"""Fair multi-resource scheduling: Dominant Resource Fairness (Ghodsi et al., NSDI 2011) across
teams, priority with aging inside a team, and a capacity reservation for a job that has waited
too long.

Pure domain logic: no database, no I/O, no clock. Callers pass the capacity, the running and
queued jobs, the teams and ``now``; ``plan`` answers which queued jobs start and, for every job
that keeps waiting, why and where it stands in line.

How ``plan`` decides, in one round:

1. A team's weighted dominant share is the largest fraction of any resource it holds, divided by
   its weight. Repeatedly the team with the lowest weighted share that still has a startable job
   is picked (ties by team name), and its best job that fits both the free capacity and the team
   quota starts. A job that does not fit is passed over for a smaller one of the same team
   (backfilling), so capacity is never left idle while a waiting job fits, unless a
   reservation (3.) holds it.
2. Inside a team jobs are ranked by effective priority, ``priority + floor(waited /
   aging_interval_s)``, then by submit time, then by id. Aging alone guarantees that an old job
   eventually outranks any stream of newer jobs of fixed priority.
3. Aging cannot help a large job that is already first in line but never fits, because smaller
   jobs keep backfilling the capacity that frees up. So the job that has waited longest past
   ``reservation_after_s`` (and could ever run) holds a reservation: every other job, of any
   team, is admitted only if it leaves the holder's demand free, and the holder's teammates only
   if they also leave room for it under the team quota. Capacity drains towards the holder as
   running jobs end; the holder itself still starts in its team's fair turn, which comes in the
   same round once it fits because nobody else may take its share. When it starts, the next
   oldest job takes the reservation. One reservation at a time bounds the capacity kept idle.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import ItemsView, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

# Relative slack for float comparisons, so 0.1 + 0.2 still "fits" in 0.3.
_TOLERANCE = 1e-9
# Shares are compared after rounding so float noise cannot decide a tie that names should.
_SHARE_DIGITS = 12
# simulate_drf hands out one task per step; beyond this a capacity plan needs coarser units.
MAX_SIMULATED_TASKS = 1_000_000


class ZeroCapacityError(ValueError):
    """A demand names a resource of which the capacity has none."""


def _exceeds(amount: float, available: float) -> bool:
    return amount > available and (
        amount - available > _TOLERANCE * max(1.0, abs(amount), abs(available))
    )


class Resources(Mapping[str, float]):
    """An immutable amount per resource kind (``cpu``, ``memory``, ``gpu``, any name).

    A kind that is absent counts as zero, also for equality.
    """

    __slots__ = ("_amounts",)

    def __init__(self, amounts: Mapping[str, float] | None = None, /, **named: float) -> None:
        merged = {**(amounts or {}), **named}
        checked: dict[str, float] = {}
        for name in sorted(merged):
            if not name or not isinstance(name, str):
                raise ValueError(f"resource names must be non-empty strings, got {name!r}")
            value = float(merged[name])
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite amount >= 0, got {merged[name]!r}")
            checked[name] = value
        self._amounts = checked

    @classmethod
    def _checked(cls, amounts: dict[str, float]) -> Resources:
        """Wrap amounts already known valid; skips validation on the scheduler's hot path."""
        made = cls.__new__(cls)
        made._amounts = {name: amounts[name] for name in sorted(amounts)}
        return made

    def __getitem__(self, name: str) -> float:
        return self._amounts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._amounts)

    def __len__(self) -> int:
        return len(self._amounts)

    def items(self) -> ItemsView[str, float]:
        return self._amounts.items()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        names = set(self._amounts) | set(other)
        return all(self.amount(n) == float(other.get(n, 0.0)) for n in names)

    def __hash__(self) -> int:
        return hash(frozenset((n, a) for n, a in self._amounts.items() if a != 0.0))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={a:g}" for n, a in self._amounts.items())
        return f"Resources({inner})"

    def amount(self, name: str) -> float:
        return self._amounts.get(name, 0.0)

    def is_zero(self) -> bool:
        return all(a == 0.0 for a in self._amounts.values())

    def add(self, other: Mapping[str, float]) -> Resources:
        if not isinstance(other, Resources):
            other = Resources(other)
        names = set(self._amounts) | set(other._amounts)
        return Resources._checked({n: self.amount(n) + other.amount(n) for n in names})

    def subtract(self, other: Mapping[str, float]) -> Resources:
        """What is left after taking ``other`` away, floored at zero per kind (an over-committed
        kind simply has nothing left)."""
        if not isinstance(other, Resources):
            other = Resources(other)
        names = set(self._amounts) | set(other._amounts)
        return Resources._checked({n: max(0.0, self.amount(n) - other.amount(n)) for n in names})

    def scale(self, factor: float) -> Resources:
        return Resources({n: a * factor for n, a in self._amounts.items()})

    def exceeding(self, available: Mapping[str, float]) -> tuple[str, ...]:
        """The kinds (sorted) of which this needs more than ``available`` holds."""
        # Mapping.get is slow; plan calls this for every queued job.
        held = available._amounts if isinstance(available, Resources) else available
        return tuple(n for n, a in self._amounts.items() if a > 0 and _exceeds(a, held.get(n, 0.0)))

    def fits(self, available: Mapping[str, float]) -> bool:
        return not self.exceeding(available)

    def dominant_resource(self, capacity: Mapping[str, float]) -> str | None:
        """The kind of which this holds the largest fraction of ``capacity`` (ties by name)."""
        best: tuple[float, str] | None = None
        for name, amount in self._amounts.items():
            if amount <= 0:
                continue
            total = capacity.get(name, 0.0)
            if total <= 0:
                raise ZeroCapacityError(f"{name} is demanded but the capacity has no {name}")
            if best is None or amount / total > best[0]:
                best = (amount / total, name)
        return None if best is None else best[1]

    def dominant_share(self, capacity: Mapping[str, float]) -> float:
        """The largest fraction of any kind of ``capacity`` this holds (0 for nothing)."""
        name = self.dominant_resource(capacity)
        return 0.0 if name is None else self._amounts[name] / capacity[name]


@dataclass(frozen=True)
class Team:
    name: str
    weight: float = 1.0
    # Caps what the team may hold at once; kinds it does not name are not capped.
    quota: Resources | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"team {self.name}: weight must be > 0, got {self.weight!r}")


@dataclass(frozen=True)
class Job:
    id: str
    team: str
    demand: Resources
    priority: int = 0
    submitted_at: float = 0.0


@dataclass(frozen=True)
class SchedulingPolicy:
    # Effective priority grows by one per this many seconds waited; None turns aging off.
    aging_interval_s: float | None = 300.0
    # A job waiting this long may hold a capacity reservation; None turns reservations off.
    reservation_after_s: float | None = 3600.0

    def __post_init__(self) -> None:
        for name in ("aging_interval_s", "reservation_after_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")

    def effective_priority(self, job: Job, now: float) -> int:
        if self.aging_interval_s is None:
            return job.priority
        return job.priority + math.floor(max(0.0, now - job.submitted_at) / self.aging_interval_s)


class WaitReason(StrEnum):
    # First in line for `resource`; waits for running jobs to free it.
    INSUFFICIENT_CAPACITY = "insufficient_capacity"
    # The team's holdings plus this job would pass its quota on `resource`.
    OVER_QUOTA = "over_quota"
    # A job of another team, whose weighted dominant share is lower, is ahead for `resource`.
    FAIR_SHARE = "fair_share"
    # A job of the same team with a higher effective priority is ahead for `resource`.
    BEHIND_HIGHER_PRIORITY = "behind_higher_priority"
    # `resource` is held for a job that has waited past the reservation threshold.
    CAPACITY_RESERVED = "capacity_reserved"
    # The job needs more `resource` than the whole capacity: it cannot start as submitted.
    EXCEEDS_CAPACITY = "exceeds_capacity"
    # The job needs more `resource` than its team's quota: it cannot start as submitted.
    EXCEEDS_QUOTA = "exceeds_quota"


@dataclass(frozen=True)
class WaitingJob:
    job: Job
    reason: WaitReason
    # 1-based place in line: the order in which waiting jobs would start as capacity frees.
    position: int
    effective_priority: int
    resource: str | None = None
    blocked_by_job: str | None = None
    blocked_by_team: str | None = None
    holds_reservation: bool = False
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    started: tuple[Job, ...]  # in the order they were chosen
    waiting: tuple[WaitingJob, ...]  # in line order (position 1 first)
    reserved_for: str | None  # id of the job capacity is being held for, if any
    dominant_shares: dict[str, float]  # per team, after the starts
    weighted_shares: dict[str, float]
    free: Resources  # capacity left after the starts


def _held_share(held: Resources, capacity: Resources) -> float:
    share = 0.0
    for name, amount in held.items():
        if amount <= 0:
            continue
        total = capacity.amount(name)
        # A team still holding a kind the capacity no longer has ranks last, rather than crash.
        share = max(share, amount / total if total > 0 else math.inf)
    return share


def _share_key(share: float, weight: float) -> float:
    return round(share / weight, _SHARE_DIGITS)


def _fmt(amount: float) -> str:
    return f"{amount:g}"


class _Round:
    """The mutable state of one ``plan`` call."""

    def __init__(
        self,
        capacity: Resources,
        running: list[Job],
        teams: dict[str, Team],
    ) -> None:
        self.capacity = capacity
        self.teams = teams
        self.usage: dict[str, Resources] = {}
        for job in running:
            self.usage[job.team] = self.held(job.team).add(job.demand)
        total = Resources()
        for held in self.usage.values():
            total = total.add(held)
        self.free = capacity.subtract(total)
        self.shares = {name: self.weighted_share(name) for name in self.usage}

    def team(self, name: str) -> Team:
        if name not in self.teams:
            self.teams[name] = Team(name)
        return self.teams[name]

    def held(self, team: str) -> Resources:
        return self.usage.get(team, Resources())

    def weighted_share(self, team: str) -> float:
        return _share_key(_held_share(self.held(team), self.capacity), self.team(team).weight)

    def over_quota(self, job: Job, extra: Resources | None = None) -> tuple[str, ...]:
        quota = self.team(job.team).quota
        if quota is None:
            return ()
        after = self.held(job.team).add(job.demand)
        if extra is not None:
            after = after.add(extra)
        return tuple(n for n in after.exceeding(quota) if n in quota and job.demand.amount(n) > 0)

    def admits(self, job: Job, holder: Job | None) -> bool:
        if not job.demand.fits(self.free) or self.over_quota(job):
            return False
        if holder is None or holder.id == job.id:
            return True
        if not job.demand.fits(self.free.subtract(holder.demand)):
            return False
        return not (holder.team == job.team and self.over_quota(job, holder.demand))

    def start(self, job: Job) -> None:
        self.usage[job.team] = self.held(job.team).add(job.demand)
        self.free = self.free.subtract(job.demand)
        self.shares[job.team] = self.weighted_share(job.team)


def _static_block(job: Job, capacity: Resources, team: Team) -> tuple[WaitReason, str] | None:
    """Why ``job`` can never start as submitted, if it cannot."""
    too_big = job.demand.exceeding(capacity)
    if too_big:
        return WaitReason.EXCEEDS_CAPACITY, too_big[0]
    if team.quota is not None:
        over = [n for n in job.demand.exceeding(team.quota) if n in team.quota]
        if over:
            return WaitReason.EXCEEDS_QUOTA, over[0]
    return None


def _tightest(demand: Resources, free: Resources, capacity: Resources) -> str:
    """Of the kinds ``demand`` lacks, the one it lacks most of relative to capacity."""
    short = demand.exceeding(free)

    def deficit(name: str) -> float:
        total = capacity.amount(name)
        missing = demand.amount(name) - free.amount(name)
        return missing / total if total > 0 else math.inf

    return min(short, key=lambda n: (-deficit(n), n))


def plan(
    capacity: Resources,
    running: Iterable[Job],
    queued: Iterable[Job],
    teams: Iterable[Team],
    now: float,
    policy: SchedulingPolicy | None = None,
) -> Decision:
    """Decide which ``queued`` jobs start now, and why each other one waits.

    ``running`` jobs already hold their demand. Teams not listed get weight 1 and no quota.
    The result depends only on the arguments, not on their order.
    """
    policy = policy or SchedulingPolicy()
    running = list(running)
    queued = list(queued)
    ids = [job.id for job in running + queued]
    if len(ids) != len(set(ids)):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"job ids must be unique, repeated: {', '.join(duplicates)}")
    team_by_name: dict[str, Team] = {}
    for team in teams:
        if team.name in team_by_name:
            raise ValueError(f"team {team.name} is listed twice")
        team_by_name[team.name] = team
    state = _Round(capacity, running, team_by_name)

    priority = {job.id: policy.effective_priority(job, now) for job in queued}

    def rank(job: Job) -> tuple[int, float, str]:
        return (-priority[job.id], job.submitted_at, job.id)

    static: dict[str, tuple[WaitReason, str]] = {}
    candidates: dict[str, list[Job]] = {}
    for job in sorted(queued, key=rank):
        blocked = _static_block(job, capacity, state.team(job.team))
        if blocked is not None:
            static[job.id] = blocked
        else:
            candidates.setdefault(job.team, []).append(job)
            state.shares.setdefault(job.team, state.weighted_share(job.team))

    aged: deque[Job] = deque()
    if policy.reservation_after_s is not None:
        limit = policy.reservation_after_s
        aged.extend(
            sorted(
                (j for j in queued if j.id not in static and now - j.submitted_at >= limit),
                key=lambda j: (j.submitted_at, j.id),
            )
        )

    started: list[Job] = []
    started_ids: set[str] = set()
    passed_over: set[str] = set()

    def start(job: Job) -> None:
        state.start(job)
        started.append(job)
        started_ids.add(job.id)

    def next_holder() -> Job | None:
        while aged:
            job = aged.popleft()
            if job.id in started_ids:
                continue
            # Passed over while the previous reservation was in force: its turn has gone by,
            # so it gets it now rather than next round.
            if job.id in passed_over and state.admits(job, None):
                start(job)
                continue
            return job
        return None

    holder = next_holder()
    cursor = dict.fromkeys(candidates, 0)
    active = set(candidates)
    while active:
        team_name = min(active, key=lambda t: (state.shares[t], t))
        jobs = candidates[team_name]
        chosen: Job | None = None
        i = cursor[team_name]
        while i < len(jobs) and chosen is None:
            job = jobs[i]
            i += 1
            if job.id in started_ids:
                continue
            if state.admits(job, holder):
                chosen = job
            else:
                # Free capacity and quota headroom only shrink within a round, so a job passed
                # over here would be passed over again: the cursor never moves back.
                passed_over.add(job.id)
        cursor[team_name] = i
        if chosen is None:
            active.discard(team_name)
            continue
        start(chosen)
        if holder is not None and chosen.id == holder.id:
            holder = next_holder()

    left = sorted((j for j in queued if j.id not in started_ids), key=rank)
    waiting = _explain(state, left, holder, static, priority)
    return Decision(
        started=tuple(started),
        waiting=waiting,
        reserved_for=None if holder is None else holder.id,
        dominant_shares={t: _held_share(state.held(t), capacity) for t in sorted(state.shares)},
        weighted_shares={t: state.shares[t] for t in sorted(state.shares)},
        free=state.free,
    )


def _line_order(state: _Round, waiting: list[Job], holder: Job | None) -> list[Job]:
    """The order in which waiting jobs would start if capacity were no object: the reservation
    holder first, then DRF progressive filling over what the teams hold after this round.
    ``waiting`` comes ranked within each team."""
    queues: dict[str, deque[Job]] = {}
    for job in waiting:
        if holder is None or job.id != holder.id:
            queues.setdefault(job.team, deque()).append(job)
    order = [] if holder is None else [holder]
    usage = {team: state.held(team) for team in queues}
    if holder is not None and holder.team in usage:
        usage[holder.team] = usage[holder.team].add(holder.demand)

    def key(team: str) -> tuple[float, str]:
        share = _held_share(usage[team], state.capacity)
        return (_share_key(share, state.team(team).weight), team)

    heap = [key(team) for team in queues]
    heapq.heapify(heap)
    while heap:
        _, team = heapq.heappop(heap)
        job = queues[team].popleft()
        order.append(job)
        usage[team] = usage[team].add(job.demand)
        if queues[team]:
            heapq.heappush(heap, key(team))
    return order


def _explain(
    state: _Round,
    left: list[Job],
    holder: Job | None,
    static: dict[str, tuple[WaitReason, str]],
    priority: dict[str, int],
) -> tuple[WaitingJob, ...]:
    """A reason and a place in line for every job in ``left`` (ranked within each team)."""
    order = _line_order(state, [j for j in left if j.id not in static], holder)
    order += sorted((j for j in left if j.id in static), key=lambda j: j.team)

    first_in_line: dict[str, Job] = {}
    result: list[WaitingJob] = []
    for position, job in enumerate(order, start=1):
        reason, resource, ahead, detail = _why_waiting(
            state, job, holder, static, priority, first_in_line
        )
        result.append(
            WaitingJob(
                job=job,
                reason=reason,
                position=position,
                effective_priority=priority[job.id],
                resource=resource,
                blocked_by_job=None if ahead is None else ahead.id,
                blocked_by_team=None if ahead is None else ahead.team,
                holds_reservation=holder is not None and job.id == holder.id,
                detail=detail,
            )
        )
        if reason in _IN_LINE_FOR_CAPACITY:
            for name, amount in job.demand.items():
                if amount > 0:
                    first_in_line.setdefault(name, job)
    return tuple(result)


# Reasons of jobs that take freed capacity before the jobs behind them in line.
_IN_LINE_FOR_CAPACITY = {
    WaitReason.INSUFFICIENT_CAPACITY,
    WaitReason.FAIR_SHARE,
    WaitReason.BEHIND_HIGHER_PRIORITY,
    WaitReason.CAPACITY_RESERVED,
}


def _why_waiting(
    state: _Round,
    job: Job,
    holder: Job | None,
    static: dict[str, tuple[WaitReason, str]],
    priority: dict[str, int],
    first_in_line: dict[str, Job],
) -> tuple[WaitReason, str | None, Job | None, str]:
    """(reason, resource, the job ahead, a human-readable detail) for one waiting job."""
    if job.id in static:
        reason, name = static[job.id]
        limit = "capacity" if reason is WaitReason.EXCEEDS_CAPACITY else "team quota"
        detail = f"needs {_fmt(job.demand[name])} {name}, more than the whole {limit}"
        return reason, name, None, detail
    over = state.over_quota(job)
    if over:
        name = over[0]
        quota = state.team(job.team).quota or Resources()
        detail = (
            f"team {job.team} holds {_fmt(state.held(job.team).amount(name))} of its "
            f"{_fmt(quota[name])} {name} quota, the job needs {_fmt(job.demand[name])}"
        )
        return WaitReason.OVER_QUOTA, name, None, detail
    if job.demand.fits(state.free):
        # It fits what is free, so only the reservation can be holding it back.
        assert holder is not None and holder.id != job.id
        lacking = job.demand.exceeding(state.free.subtract(holder.demand))
        held_quota = () if lacking else state.over_quota(job, holder.demand)
        held = (lacking or held_quota or (None,))[0]
        detail = f"capacity is held for {holder.id}, which has waited the longest"
        return WaitReason.CAPACITY_RESERVED, held, holder, detail
    name = _tightest(job.demand, state.free, state.capacity)
    needs = f"needs {_fmt(job.demand[name])} {name}, {_fmt(state.free.amount(name))} free"
    ahead = first_in_line.get(name)
    if ahead is None:
        return WaitReason.INSUFFICIENT_CAPACITY, name, None, needs
    if holder is not None and ahead.id == holder.id:
        detail = f"{needs}; {name} is held for {ahead.id}, which has waited the longest"
        return WaitReason.CAPACITY_RESERVED, name, ahead, detail
    if ahead.team == job.team:
        detail = f"{needs}; {ahead.id} (effective priority {priority[ahead.id]}) is ahead of it"
        return WaitReason.BEHIND_HIGHER_PRIORITY, name, ahead, detail
    detail = (
        f"{needs}; team {ahead.team} has the lower weighted dominant share and is next for {name}"
    )
    return WaitReason.FAIR_SHARE, name, ahead, detail


@dataclass(frozen=True)
class SimulationResult:
    allocations: dict[str, int]  # tasks per team
    dominant_shares: dict[str, float]  # unweighted, per team
    used: Resources  # every capacity kind, also those left unused


def simulate_drf(
    capacity: Resources,
    demands: Mapping[str, Resources],
    weights: Mapping[str, float] | None = None,
) -> SimulationResult:
    """Progressive filling under (weighted) DRF, each team having unlimited tasks of one size.

    One task at a time goes to the team with the lowest weighted dominant share whose next task
    still fits (ties by team name); a team whose task no longer fits drops out while the others
    go on. Raises ``ZeroCapacityError`` when a demand names a kind the capacity has none of,
    ``ValueError`` for an empty demand, a bad weight or a plan of more than
    ``MAX_SIMULATED_TASKS`` tasks.
    """
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(demands))
    if unknown:
        raise ValueError(f"weights given for teams without a demand: {', '.join(unknown)}")
    task_share: dict[str, float] = {}
    bound = 0
    for team, demand in demands.items():
        weight = weights.setdefault(team, 1.0)
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"team {team}: weight must be > 0, got {weight!r}")
        if demand.is_zero():
            raise ValueError(f"team {team} demands nothing, so it would take unlimited tasks")
        try:
            task_share[team] = demand.dominant_share(capacity)
        except ZeroCapacityError as exc:
            raise ZeroCapacityError(f"team {team}: {exc}") from None
        bound += min(math.floor(capacity[n] / a) for n, a in demand.items() if a > 0)
    if bound > MAX_SIMULATED_TASKS:
        raise ValueError(
            f"the plan could hand out {bound} tasks, more than {MAX_SIMULATED_TASKS}; "
            "express capacity and demands in coarser units"
        )

    names = sorted(set(capacity).union(*(d.keys() for d in demands.values())))
    limit = [capacity.amount(n) for n in names]
    needs = {team: [d.amount(n) for n in names] for team, d in demands.items()}
    used = [0.0] * len(names)
    tasks = dict.fromkeys(demands, 0)
    heap = [(0.0, team) for team in demands]
    heapq.heapify(heap)
    while heap:
        _, team = heapq.heappop(heap)
        need = needs[team]
        after = [u + a for u, a in zip(used, need, strict=True)]
        if any(a > 0 and _exceeds(x, c) for x, a, c in zip(after, need, limit, strict=True)):
            # What is free only shrinks, so this team's task will never fit again.
            continue
        used = after
        tasks[team] += 1
        share = max(tasks[team] * a / c for a, c in zip(need, limit, strict=True) if a > 0)
        heapq.heappush(heap, (_share_key(share, weights[team]), team))

    return SimulationResult(
        allocations=tasks,
        dominant_shares={
            team: demands[team].scale(n).dominant_share(capacity) for team, n in tasks.items()
        },
        used=Resources(dict(zip(names, used, strict=True))),
    )
