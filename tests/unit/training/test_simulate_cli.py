"""``kiln scheduler simulate``: parsing, the table, and the JSON last line."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from kiln_training.simulate import parse_capacity, parse_demand, scheduler_app

runner = CliRunner()

# Mounted the way the kiln CLI mounts it, so the test runs `kiln scheduler simulate ...`.
kiln = typer.Typer()
kiln.add_typer(scheduler_app, name="scheduler")


@kiln.command()
def version() -> None:
    """A second command, as the real kiln app has many."""


def simulate(*args: str) -> tuple[int, str]:
    result = runner.invoke(kiln, ["scheduler", "simulate", *args])
    return result.exit_code, result.output


def last_json(output: str) -> dict[str, object]:
    lines = output.strip().splitlines()
    parsed: dict[str, object] = json.loads(lines[-1])
    return parsed


def flat(output: str) -> str:
    """The output with the error box and its line wrapping taken out."""
    return " ".join(output.replace("│", " ").split())


def test_reproduces_the_drf_paper_example_and_ends_with_one_json_object() -> None:
    code, output = simulate(
        "--capacity",
        "cpu=9,memory=18",
        "--demand",
        "a:cpu=1,memory=4",
        "--demand",
        "b:cpu=3,memory=1",
    )
    assert code == 0, output
    summary = last_json(output)
    assert list(summary)[:2] == ["allocations", "dominant_shares"]
    assert summary["allocations"] == {"a": 3, "b": 2}
    assert summary["dominant_shares"] == {"a": 0.6667, "b": 0.6667}
    assert summary["used"] == {"cpu": 9, "memory": 14}
    assert summary["capacity"] == {"cpu": 9, "memory": 18}


def test_prints_a_table_with_tasks_shares_and_resources_used() -> None:
    code, output = simulate(
        "--capacity",
        "cpu=9,memory=18",
        "--demand",
        "a:cpu=1,memory=4",
        "--demand",
        "b:cpu=3,memory=1",
    )
    assert code == 0
    table = output.strip().splitlines()[:-1]
    assert table[0].split() == ["team", "weight", "tasks", "dominant", "share", "cpu", "memory"]
    assert table[1].split() == ["a", "1", "3", "0.6667", "(memory)", "3", "12"]
    assert table[2].split() == ["b", "1", "2", "0.6667", "(cpu)", "6", "2"]
    assert table[3].split() == ["used", "9/9", "14/18"]


def test_a_weight_inside_a_demand_weights_the_team() -> None:
    code, output = simulate(
        "--capacity",
        "cpu=10,memory=50",
        "--demand",
        "a:cpu=1,memory=7,weight=2",
        "--demand",
        "b:cpu=2,memory=1",
    )
    assert code == 0, output
    summary = last_json(output)
    assert summary["allocations"] == {"a": 6, "b": 2}
    assert summary["dominant_shares"] == {"a": 0.84, "b": 0.4}
    assert summary["weights"] == {"a": 2, "b": 1}


def test_any_resource_names_work() -> None:
    code, output = simulate(
        "--capacity",
        "cpu=16, memory=64, nvidia.com/gpu=4",
        "--demand",
        "ml:cpu=2,memory=8,nvidia.com/gpu=1",
        "--demand",
        "etl:cpu=4,memory=4",
    )
    assert code == 0, output
    # Both at 1/4 a task, ties by name: etl, ml, etl, ml, etl; then cpu is full.
    assert last_json(output)["allocations"] == {"ml": 2, "etl": 3}


def test_also_works_on_the_sub_app_alone() -> None:
    result = runner.invoke(
        scheduler_app, ["simulate", "--capacity", "cpu=9,memory=18", "--demand", "a:cpu=1,memory=4"]
    )
    assert result.exit_code == 0, result.output
    assert last_json(result.output)["allocations"] == {"a": 4}


@pytest.mark.parametrize(
    ("capacity", "demand", "names"),
    [
        ("cpu=9,memory=x18", "a:cpu=1", ["--capacity", "'memory=x18'", "not a number"]),
        ("cpu9", "a:cpu=1", ["--capacity", "'cpu9'", "name=value"]),
        ("cpu=9,,memory=2", "a:cpu=1", ["--capacity", "''"]),
        ("=9", "a:cpu=1", ["--capacity", "'=9'"]),
        ("cpu=9,cpu=3", "a:cpu=1", ["--capacity", "'cpu=3'", "twice"]),
        ("cpu=-1", "a:cpu=1", ["--capacity", "'cpu=-1'"]),
        ("cpu=nan", "a:cpu=1", ["--capacity", "'cpu=nan'"]),
        ("cpu=9,weight=1", "a:cpu=1", ["--capacity", "'weight'"]),
        ("cpu=9", "acpu=1", ["--demand", "'acpu=1'", "team:name=value"]),
        ("cpu=9", ":cpu=1", ["--demand", "':cpu=1'", "team name"]),
        ("cpu=9", "a:cpu", ["--demand", "'cpu'", "name=value"]),
        ("cpu=9", "a:cpu=one", ["--demand", "'cpu=one'", "not a number"]),
        ("cpu=9", "a:cpu=1,weight=0", ["--demand", "weight must be > 0"]),
        ("cpu=9", "a:weight=2", ["--demand", "'a:weight=2'", "no resource"]),
        ("cpu=9", "a:", ["--demand", "nothing"]),
        ("cpu=9", "a:cpu=0", ["--demand", "team a demands nothing"]),
        (
            "cpu=9,gpu=0",
            "a:cpu=1,gpu=1",
            ["--demand", "team a: gpu is demanded but the capacity has no gpu"],
        ),
    ],
)
def test_bad_syntax_exits_2_naming_the_bad_token(
    capacity: str, demand: str, names: list[str]
) -> None:
    code, output = simulate("--capacity", capacity, "--demand", demand)
    assert code == 2, output
    for name in names:
        assert name in flat(output)


def test_a_team_given_twice_is_an_error() -> None:
    code, output = simulate("--capacity", "cpu=9", "--demand", "a:cpu=1", "--demand", "a:cpu=2")
    assert code == 2
    assert "team a is given twice" in flat(output)


def test_parsers_return_domain_values() -> None:
    assert dict(parse_capacity("cpu=9, memory=18")) == {"cpu": 9.0, "memory": 18.0}
    parsed = parse_demand("a:cpu=1,memory=4,weight=2.5")
    assert (parsed.team, dict(parsed.demand), parsed.weight) == (
        "a",
        {"cpu": 1.0, "memory": 4.0},
        2.5,
    )
