"""``kiln scheduler simulate``: how DRF would split a cluster between teams, for capacity
planning.

    kiln scheduler simulate --capacity cpu=9,memory=18 \\
        --demand a:cpu=1,memory=4 --demand b:cpu=3,memory=1,weight=2

Each team has unlimited tasks of its demand's size. The command prints a table, then as its last
line one JSON object: ``{"allocations": {...}, "dominant_shares": {...}, "used": {...},
"capacity": {...}, "weights": {...}}`` with shares rounded to 4 places.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from kiln_training.scheduler import Resources, SimulationResult, simulate_drf

# Inside a --demand, this key is the team's weight, so no resource may be called that.
WEIGHT_KEY = "weight"
_FORBIDDEN_IN_NAMES = set("=,:") | {" ", "\t"}

scheduler_app = typer.Typer(
    help="Fair-share (DRF) scheduler tools.", no_args_is_help=True, pretty_exceptions_enable=False
)


@scheduler_app.callback()
def _group() -> None:
    """Fair-share (DRF) scheduler tools."""
    # A callback keeps `simulate` a subcommand even while it is the app's only command.


@dataclass(frozen=True)
class TeamDemand:
    team: str
    demand: Resources
    weight: float


def _bad(option: str, message: str) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=f"'{option}'")


def _check_name(name: str, token: str, option: str, what: str) -> None:
    if not name or any(c in _FORBIDDEN_IN_NAMES for c in name):
        raise _bad(option, f"bad {what} name in {token!r}: expected a non-empty name")


def _parse_number(text: str, token: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(option, f"{token!r}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise _bad(option, f"{token!r}: the amount must be a finite number >= 0")
    return value


def _parse_entries(text: str, option: str) -> dict[str, float]:
    """``name=value,name=value`` into a dict, in the order given."""
    entries: dict[str, float] = {}
    if not text.strip():
        raise _bad(option, "expected name=value entries, got nothing")
    for raw in text.split(","):
        token = raw.strip()
        name, sep, value = token.partition("=")
        name = name.strip()
        if not sep:
            raise _bad(option, f"{token!r} is not of the form name=value")
        _check_name(name, token, option, "resource")
        if name in entries:
            raise _bad(option, f"{token!r}: {name} is given twice")
        entries[name] = _parse_number(value.strip(), token, option)
    return entries


def parse_capacity(text: str) -> Resources:
    """``cpu=9,memory=18`` into the cluster's capacity."""
    entries = _parse_entries(text, "--capacity")
    if WEIGHT_KEY in entries:
        raise _bad("--capacity", f"{WEIGHT_KEY!r} is not a resource (it sets a team's weight)")
    return Resources(entries)


def parse_demand(text: str) -> TeamDemand:
    """``a:cpu=1,memory=4[,weight=2]`` into one team's task size and weight."""
    team, sep, rest = text.partition(":")
    team = team.strip()
    if not sep:
        raise _bad("--demand", f"{text!r} is not of the form team:name=value,...")
    _check_name(team, text, "--demand", "team")
    entries = _parse_entries(rest, "--demand")
    weight = entries.pop(WEIGHT_KEY, 1.0)
    if weight <= 0:
        raise _bad("--demand", f"team {team}: weight must be > 0, got {weight:g}")
    if not entries:
        raise _bad("--demand", f"{text!r}: team {team} demands no resource")
    return TeamDemand(team=team, demand=Resources(entries), weight=weight)


def simulate(capacity: Resources, demands: list[TeamDemand]) -> SimulationResult:
    seen: set[str] = set()
    for item in demands:
        if item.team in seen:
            raise _bad("--demand", f"team {item.team} is given twice")
        seen.add(item.team)
    try:
        return simulate_drf(
            capacity,
            {d.team: d.demand for d in demands},
            {d.team: d.weight for d in demands},
        )
    except ValueError as exc:
        raise _bad("--demand", str(exc)) from None


def _number(value: float) -> float | int:
    return int(value) if value.is_integer() else round(value, 6)


def summary(
    capacity: Resources, demands: list[TeamDemand], result: SimulationResult
) -> dict[str, Any]:
    """The machine-readable result: the JSON object the command prints last."""
    return {
        "allocations": dict(result.allocations),
        "dominant_shares": {t: round(s, 4) for t, s in result.dominant_shares.items()},
        "used": {n: _number(a) for n, a in result.used.items()},
        "capacity": {n: _number(a) for n, a in capacity.items()},
        "weights": {d.team: _number(d.weight) for d in demands},
    }


def table(capacity: Resources, demands: list[TeamDemand], result: SimulationResult) -> list[str]:
    """A plain-text table: one row per team, then the total used against the capacity."""
    names = list(result.used)
    header = ["team", "weight", "tasks", "dominant share", *names]
    rows = [header]
    for item in demands:
        tasks = result.allocations[item.team]
        held = item.demand.scale(tasks)
        dominant = item.demand.dominant_resource(capacity)
        share = f"{result.dominant_shares[item.team]:.4f} ({dominant})"
        amounts = [f"{held.amount(n):g}" for n in names]
        rows.append([item.team, f"{item.weight:g}", str(tasks), share, *amounts])
    used = [f"{result.used.amount(n):g}/{capacity.amount(n):g}" for n in names]
    rows.append(["used", "", "", "", *used])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


@scheduler_app.command("simulate")
def simulate_command(
    capacity: Annotated[
        str, typer.Option("--capacity", help="cluster capacity, e.g. cpu=9,memory=18,gpu=4")
    ],
    demand: Annotated[
        list[str],
        typer.Option(
            "--demand",
            help="one team's task size, optionally its weight: a:cpu=1,memory=4[,weight=2] "
            "(repeat per team)",
        ),
    ],
) -> None:
    """Split the capacity between teams with unlimited tasks of one size each, by weighted DRF."""
    total = parse_capacity(capacity)
    demands = [parse_demand(text) for text in demand]
    result = simulate(total, demands)
    for line in table(total, demands, result):
        typer.echo(line)
    typer.echo(json.dumps(summary(total, demands, result)))
