"""Kiln's Prometheus alerts: the rules load, each alert the issue asks for exists, links to its
runbook section and has promtool unit tests that fire it and keep it quiet, `promtool test
rules` passes, and a rule whose threshold drifts fails its tests. Needs the pinned promtool
(tools/install_promtool.sh); in CI a missing binary fails the tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import REPO, cache_dir, missing_tool
from tests.deploy.test_runbooks import kiln_metric_names

RULES = REPO / "k8s" / "base" / "monitoring" / "alerts.yml"
RULE_TESTS = REPO / "k8s" / "base" / "monitoring" / "alerts.test.yml"
PROMTOOL_VERSION = "v0.316.0"  # tools/install_promtool.sh
# What the issue asks to alert on, by the alert that covers it.
REQUIRED = {
    "KilnOutboxBacklogOld",  # outbox backlog older than a threshold
    "KilnConsumerLagGrowing",  # consumer lag growing
    "KilnEventsDeadLettered",  # dead letters appearing
    "KilnApiErrorRate",  # error rate over an SLO per API
    "KilnApiLatency",  # latency over an SLO per API
    "KilnCanaryRolledBack",  # a canary rolled back
    "KilnProcessNotReady",  # a process not ready
    "KilnTrainingWorkerLost",  # a training worker lost
}


def find_promtool() -> str | None:
    if env := os.environ.get("KILN_PROMTOOL"):
        return env
    pinned = cache_dir() / "bin" / "promtool"
    stamp = cache_dir() / "bin" / "promtool.version"
    if pinned.is_file() and stamp.is_file() and stamp.read_text().strip() == PROMTOOL_VERSION:
        return str(pinned)
    return shutil.which("promtool")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = find_promtool()
    if found is None:
        # Idempotent and pinned; the first build takes minutes (Go and the module proxy).
        done = subprocess.run(
            [str(REPO / "tools" / "install_promtool.sh")],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        found = find_promtool()
        if found is None:
            missing_tool(f"promtool is not installed (tools/install_promtool.sh: {done.stderr})")
    return found


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    return {
        re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in path.read_text().splitlines()
        if line.startswith("#")
    }


def alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def rule_tests() -> list[dict[str, Any]]:
    return [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]


def promtool_run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def test_every_required_alert_exists_with_a_runbook_section() -> None:
    rules = alerts()
    assert REQUIRED <= set(rules), f"missing alerts: {REQUIRED - set(rules)}"
    for name, rule in rules.items():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbooks/alerts.md", f"{name}: runbook_url {url}"
        assert anchor == name.lower(), f"{name}: anchor {anchor!r}"
        assert anchor in anchors(REPO / path), f"{name}: no section {anchor!r} in {path}"
        assert rule["labels"]["severity"] in ("page", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_alerts_read_only_metrics_kiln_exports() -> None:
    known = kiln_metric_names()
    for name, rule in alerts().items():
        for metric in re.findall(r"\bkiln_[a-z_]+\b", rule["expr"]):
            assert metric in known, f"{name} reads unknown metric {metric}"


def test_every_alert_has_tests_that_fire_it_and_keep_it_quiet() -> None:
    cases = rule_tests()
    for name in alerts():
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no test where it stays quiet"


def test_promtool_checks_the_rules(promtool: str) -> None:
    done = promtool_run(promtool, "check", "rules", RULES.name, cwd=RULES.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout + done.stderr


def test_promtool_test_rules_passes(promtool: str) -> None:
    done = promtool_run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_a_threshold_that_drifts_fails_the_rule_tests(promtool: str, tmp_path: Path) -> None:
    # The outbox alert at 30 minutes instead of 5 no longer fires when its test says it must.
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    drifted = RULES.read_text().replace(
        "kiln_outbox_oldest_pending_age_seconds) > 300",
        "kiln_outbox_oldest_pending_age_seconds) > 1800",
    )
    assert drifted != RULES.read_text()
    (tmp_path / RULES.name).write_text(drifted)
    done = promtool_run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "KilnOutboxBacklogOld" in done.stdout + done.stderr
