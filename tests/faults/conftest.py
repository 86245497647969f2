"""Fixtures of the fault suite: the private stack, the Kiln processes on it, and the counts
table every scenario reports (printed at the end of the run, passed or not)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

import kiln_cli.infra as infra
from tests.faults.harness import LAYOUT, Counts, Stack

pytestmark = pytest.mark.integration

REPORTED: list[Counts] = []


@pytest.fixture(scope="session")
def fault_infra() -> Iterator[None]:
    """The private infrastructure, started if needed (idempotent). A stack that cannot start
    fails the suite: a fault test that silently skips would prove nothing. It is stopped again
    afterwards (an idle second Kafka and Triton cost a two-core box), unless
    KILN_FAULTS_KEEP_STACK=1 keeps it for the next run."""
    try:
        infra.up(echo=lambda _line: None, layout=LAYOUT)
    except infra.InfraError as exc:
        # Whatever did start is stopped, so it holds no ports after the run; the error has
        # each failed server's last log lines.
        infra.down(echo=lambda _line: None, layout=LAYOUT)
        pytest.fail(f"the fault suite's private stack did not come up:\n{exc}", pytrace=False)
    yield
    if os.environ.get("KILN_FAULTS_KEEP_STACK") != "1":
        infra.down(echo=lambda _line: None, layout=LAYOUT)


@pytest.fixture(scope="session")
async def stack(fault_infra: None) -> AsyncIterator[Stack]:
    """Kiln services as real processes on the private stack; one schema prefix and Kafka
    namespace per session, so counts only ever see this run's work."""
    run = uuid.uuid4().hex[:8]
    run_dir = LAYOUT.state / "runs" / run
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(run_dir=run_dir, prefix=f"f{run}_", namespace=f"f{run}")
    try:
        yield stack
    finally:
        await asyncio.to_thread(stack.stop_all)
        # Hygiene: the private database and broker keep only the last runs' state.
        try:
            for (schema,) in await stack.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"{stack.prefix}%"
            ):
                await stack.fetch(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except Exception:  # noqa: BLE001 - cleanup only; never fail the run over it
            pass
        for old in sorted((LAYOUT.state / "runs").iterdir())[:-5]:
            if old != run_dir and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)


@pytest.fixture
def report() -> Iterator[list[Counts]]:
    """Scenarios append their counts here; they are kept even when the scenario fails."""
    rows: list[Counts] = []
    yield rows
    REPORTED.extend(rows)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTED:
        return
    headers = ("scenario", "what", "accepted", "present", "duplicated", "lost", "notes")
    rows = [tuple(str(v) for v in c.as_row()) for c in REPORTED]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    terminalreporter.section("fault suite counts")
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    terminalreporter.write_line(line)
    for row in rows:
        terminalreporter.write_line("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
