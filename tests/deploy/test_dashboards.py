"""Grafana dashboards, validated offline: the committed files are what the renderer makes, each
is a well-formed dashboard on the provisioned Prometheus, every query parses (promtool checks
them as recording rules) and reads only metrics Kiln exports; compose provisions them and
Kubernetes ships them as the kiln-dashboards ConfigMap."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import REPO
from tests.deploy.test_alerts import promtool  # noqa: F401 - the pinned promtool fixture
from tests.deploy.test_runbooks import kiln_metric_names

DASHBOARDS = REPO / "k8s" / "base" / "monitoring" / "dashboards"
PROVISIONING = REPO / "compose" / "grafana" / "provisioning"
# Prometheus series that come from the scrape itself, not from Kiln's processes.
SCRAPE_SERIES = {"up"}


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def queries(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_committed_dashboards_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "render_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_loop_at_a_glance_and_one_per_service() -> None:
    boards = dashboards()
    assert set(boards) == {
        "kiln-overview.json",
        *(f"kiln-{s}.json" for s in ("dataset", "annotation", "training", "registry", "serving")),
    }


@pytest.mark.parametrize("name", sorted(p.name for p in DASHBOARDS.glob("*.json")))
def test_each_dashboard_is_well_formed_on_the_provisioned_datasource(name: str) -> None:
    board = dashboards()[name]
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert board["uid"] == name.removesuffix(".json") and board["title"]
    assert isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, f"{name}: {panel['title']}"
        assert panel["targets"], f"{name}: {panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_dashboards_read_only_metrics_kiln_exports() -> None:
    known = kiln_metric_names()
    for name, board in dashboards().items():
        for expr in queries(board):
            for metric in re.findall(r"\bkiln_[a-z_]+\b", expr):
                assert metric in known, f"{name} reads unknown metric {metric}"


def test_every_query_parses(promtool: str, tmp_path: Path) -> None:  # noqa: F811
    # Grafana's own variables are not PromQL: give them what Grafana would.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, expr in enumerate(e for board in dashboards().values() for e in queries(board))
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "b", "rules": [{"record": "b:x", "expr": "sum by (le (x)"}]}]}
        )
    )
    refused = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True)
    assert refused.returncode != 0  # the check can fail


def test_compose_provisions_them_and_kubernetes_ships_them() -> None:
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "kiln.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    source = (REPO / "compose" / mounts[path]).resolve()
    assert source == DASHBOARDS.resolve()
    assert (REPO / "compose" / mounts["/etc/grafana/provisioning"]).resolve() == PROVISIONING
    prometheus = compose["services"]["prometheus"]
    assert any(v.endswith(":/etc/prometheus/alerts.yml:ro") for v in prometheus["volumes"])
    kustomization = yaml.safe_load((REPO / "k8s" / "base" / "kustomization.yaml").read_text())
    generated = {g["name"]: g for g in kustomization["configMapGenerator"]}
    files = set(generated["kiln-dashboards"]["files"])
    assert files == {f"monitoring/dashboards/{n}" for n in dashboards()}
    assert generated["kiln-dashboards"]["options"]["labels"]["grafana_dashboard"] == "1"
    assert generated["kiln-alerts"]["files"] == ["monitoring/alerts.yml"]
