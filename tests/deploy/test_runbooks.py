"""docs/runbooks: one per service, naming metrics that exist and CLI flags that exist."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.main
from prometheus_client import REGISTRY

import kiln_core.metrics  # noqa: F401 - registers Kiln's metrics
from tests.deploy.support import PORTS, REPO, SERVICES

RUNBOOKS = REPO / "docs" / "runbooks"


def kiln_metric_names() -> set[str]:
    """Every series name Kiln's processes can export (with histogram suffixes)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("kiln_"):
            names.add(family.name)
            names.update(s.name for s in family.samples)
            if family.type == "counter":
                names.add(f"{family.name}_total")
            if family.type == "histogram":
                names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def replay_options() -> set[str]:
    from kiln_cli.main import app

    # Typer may bundle its own click, so walk the command tree by attribute.
    command: Any = typer.main.get_command(app)
    replay = command.commands["events"].commands["replay"]
    return {opt for p in replay.params for opt in getattr(p, "opts", [])}


@pytest.mark.parametrize("svc", SERVICES)
def test_each_service_has_a_runbook_with_the_required_sections(svc: str) -> None:
    text = (RUNBOOKS / f"{svc}.md").read_text()
    for section in ("## What it owns", "## Processes and scaling", "## Metrics and what to do"):
        assert section in text, f"{svc}: {section} missing"
    assert "## Replay its dead letters" in text and "kiln events replay --topic" in text
    assert "/healthz" in text and "/readyz" in text and str(PORTS[svc]) in text
    assert f"kiln-{svc}" in text  # its consumer group


@pytest.mark.parametrize("svc", SERVICES)
def test_runbook_lists_tables_the_service_has(svc: str) -> None:
    text = (RUNBOOKS / f"{svc}.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| PostgreSQL schema"))
    listed = set(re.findall(r"`([a-z_]+)`", row.split("|")[2]))
    source = "".join(p.read_text() for p in (REPO / "services" / svc / "src").rglob("*.py"))
    tables = set(re.findall(r'__tablename__ = "([a-z_]+)"', source))
    tables |= {"outbox", "inbox", "ping_received"}
    assert listed, f"{svc}: no tables listed"
    assert listed <= tables, f"{svc} runbook names tables it does not have: {listed - tables}"


def test_runbooks_name_only_metrics_that_exist() -> None:
    known = kiln_metric_names()
    assert "kiln_events_handled_total" in known
    for path in sorted(RUNBOOKS.glob("*.md")):
        for name in set(re.findall(r"\bkiln_[a-z_]+\b", path.read_text())):
            assert name in known, f"{path.name} names unknown metric {name}"


def test_runbooks_use_replay_flags_that_exist() -> None:
    options = replay_options()
    for path in sorted(RUNBOOKS.glob("*.md")):
        for line in re.findall(r"kiln events replay[^`\n]*", path.read_text()):
            for flag in re.findall(r"--[a-z-]+", line):
                assert flag in options, f"{path.name}: `{line}` uses unknown {flag}"
