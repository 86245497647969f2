"""Schemathesis against every service's OpenAPI document, on the embedded defaults (SQLite) and
on PostgreSQL, signed in as an administrator so the generated requests reach the handlers.

Each run is Schemathesis' own CLI with every check and every phase: the schema's examples,
coverage (boundary values: the largest integers, empty and overlong strings, nulls), fuzzing
(valid and invalid data) and the stateful phase (chains of calls through the links it infers:
create, read, update, delete). The test fails on any 5xx, any response its own schema does
not declare or match (status, content type, headers, body), a wrong answer to an undeclared
method or a 405 without a right ``Allow``, a missing required header accepted, authentication
not enforced, or a created resource that cannot be read back.

Checks whose findings are judgement calls are run and reported, not failed on: a schema-valid
request refused for what the schema cannot say (a reference to something that does not exist,
a state conflict), a schema-violating request a lenient parser accepts (``false`` as 0), and a
soft-deleted resource still readable by design (it can be restored)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.security.conftest import SERVICES, Stack

# Per service and database: at most this many examples per operation and phase, within a time
# budget for examples, coverage and fuzzing and another for the stateful phase (run on their
# own, so a slow machine cannot spend the whole budget before the stateful phase starts). Ten
# runs of 12 s + 10 s keep the whole Schemathesis suite near four and a half minutes on two cores.
MAX_EXAMPLES = int(os.environ.get("KILN_SECURITY_FUZZ_EXAMPLES", "25"))
MAX_SECONDS = int(os.environ.get("KILN_SECURITY_FUZZ_SECONDS", "12"))
STATEFUL_SECONDS = int(os.environ.get("KILN_SECURITY_STATEFUL_SECONDS", "10"))
PHASES = {"examples,coverage,fuzzing": MAX_SECONDS, "stateful": STATEFUL_SECONDS}
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Failure codes (`st explain --list`) that fail the test; every other one is reported.
REPORTED_ONLY = {
    "ST201": "schema-violating request accepted",
    "ST202": "schema-valid request rejected",
    "ST301": "deleted resource still available (deletes are soft, restorable)",
    "ST402": "object-level authorization (one admin user here)",
}
_HEADER = re.compile(r"^_{3,} (.+?) _{3,}$")
_FAILURE = re.compile(r"^- (ST\d{3}) (.+)$")
_SECTION = re.compile(r"^={3,} ([A-Z ]+?) ={3,}$")
# "  ❌ Stateful", "  ⏭  Coverage (disabled)", "  ⏭  Stateful (time limit)"
_PHASE = re.compile(r"^\s+(\S+)\s+(Examples|Coverage|Fuzzing|Stateful)\b\s*(.*)$")


@dataclass
class Finding:
    where: str
    code: str
    title: str
    detail: list[str] = field(default_factory=list)

    def text(self) -> str:
        return f"{self.where}: {self.code} {self.title}\n" + "\n".join(self.detail)[:3000]


@dataclass
class Outcome:
    findings: list[Finding]
    errors: list[str]
    phases: dict[str, str]
    summary: str


def parse(output: str) -> Outcome:
    """The findings, errors and phase results of `st run`'s plain-text report."""
    findings: list[Finding] = []
    errors: list[str] = []
    phases: dict[str, str] = {}
    section, where = "", ""
    current: Finding | None = None
    for line in output.splitlines():
        if m := _SECTION.match(line):
            section, current = m.group(1), None
            continue
        if m := _PHASE.match(line):
            phases[m.group(2)] = f"{m.group(1)} {m.group(3)}".strip()
        if section == "ERRORS":
            errors.append(line)
        elif section == "FAILURES":
            if m := _HEADER.match(line):
                where, current = m.group(1), None
            elif m := _FAILURE.match(line):
                current = Finding(where, m.group(1), m.group(2))
                findings.append(current)
            elif current is not None:
                current.detail.append(line)
    summary = next((line for line in reversed(output.splitlines()) if line.startswith("=")), "")
    return Outcome(findings, [e for e in errors if e.strip()], phases, summary)


def fuzz(stack: Stack, service: str, report: Path, phases: str, seconds: int) -> Outcome:
    token = stack.token("fuzzer", "admin")
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "--config-file",
        str(CONFIG),
        "run",
        f"{stack.urls[service]}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--phases",
        phases,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(seconds),
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--output-truncate",
        "true",
    ]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    # Run where the report goes: st keeps a crash cache (.schemathesis/) in its directory.
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        cwd=report.parent,
        timeout=seconds * 6 + 120,
    )
    report.write_text(done.stdout + done.stderr)
    return parse(done.stdout)


def judge(stack: Stack, service: str, kind: str, folder: Path) -> None:
    runs = []
    for index, (phases, seconds) in enumerate(PHASES.items()):
        (folder / str(index)).mkdir()
        runs.append(fuzz(stack, service, folder / str(index) / "schemathesis.txt", phases, seconds))
    findings = [f for run in runs for f in run.findings]
    hard = [f for f in findings if f.code not in REPORTED_ONLY]
    soft = [f for f in findings if f.code in REPORTED_ONLY]
    phases_run = {k: v for run in runs for k, v in run.phases.items() if "disabled" not in v}
    # Reported, so a run's judgement calls can be read in the test log.
    for run in runs:
        print(f"\n[{kind}/{service}] {run.summary} phases={run.phases}")
    for finding in soft:
        print(f"  reported: {finding.where}: {finding.code} {finding.title}")
    logged = [line for line in stack.logs.lines if "Traceback" in line]
    assert all(run.summary for run in runs), f"schemathesis printed no summary; see {folder}"
    # The stateful phase was part of the run (on a busy machine it may find its time spent).
    assert "Stateful" in phases_run, [run.summary for run in runs]
    errors = [e for run in runs for e in run.errors]
    assert not errors, "\n".join(errors)[:5000]
    assert hard == [], "\n\n".join(f.text() for f in hard) + "\n" + "".join(logged[-1:])[-3000:]


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_fuzzed_calls_on_postgres_never_break_the_service_or_its_schema(
    stack: Stack, service: str, tmp_path: Path
) -> None:
    judge(stack, service, "postgresql", tmp_path)


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_fuzzed_calls_on_embedded_defaults_never_break_the_service_or_its_schema(
    embedded_stack: Stack, service: str, tmp_path: Path
) -> None:
    judge(embedded_stack, service, "embedded", tmp_path)
