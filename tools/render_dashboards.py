"""Render Kiln's Grafana dashboards into ``k8s/base/monitoring/dashboards/``: the loop at a
glance, and one per service. Compose provisions them into its Grafana; Kubernetes ships them as
the ``kiln-dashboards`` ConfigMap (label ``grafana_dashboard: "1"`` for Grafana's sidecar).

The output is committed; tests/deploy/test_dashboards.py fails when it is stale and checks every
query offline (``python tools/render_dashboards.py`` brings the files up to date).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "k8s" / "base" / "monitoring" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "kiln-prometheus"}  # compose/grafana provisioning
SERVICES = ("dataset", "annotation", "training", "registry", "serving")
RATE = "$__rate_interval"

Panel = tuple[str, str, list[tuple[str, str]]]  # title, unit, [(expr, legend)]


def also(sel: str) -> str:
    """A selector's matchers followed by a comma, to add one more."""
    return f"{sel}," if sel else ""


def hourly(metric: str, sel: str) -> str:
    return f"sum by (endpoint) (increase({metric}{{{sel}}}[1h]))"


def http_panels(sel: str, by: str) -> list[Panel]:
    return [
        ("Requests per second", "reqps", [
            (f"sum by ({by}) (rate(kiln_http_requests_total{{{sel}}}[{RATE}]))", f"{{{{{by}}}}}"),
        ]),
        ("Share of 5xx answers", "percentunit", [
            (
                f"sum by ({by}) "
                f"(rate(kiln_http_requests_total{{{also(sel)}status=~'5..'}}[{RATE}]))"
                f" / sum by ({by}) (rate(kiln_http_requests_total{{{sel}}}[{RATE}]))",
                f"{{{{{by}}}}}",
            ),
        ]),
        ("p99 latency", "s", [
            (
                f"histogram_quantile(0.99, sum by ({by}, le) "
                f"(rate(kiln_http_request_seconds_bucket{{{sel}}}[{RATE}])))",
                f"{{{{{by}}}}}",
            ),
        ]),
        ("Requests shed (429/503 + Retry-After)", "reqps", [
            (
                f"sum by (service, reason) (rate(kiln_http_requests_shed_total{{{sel}}}[{RATE}]))",
                "{{service}} {{reason}}",
            ),
        ]),
    ]  # fmt: skip


def event_panels(sel: str, by: str) -> list[Panel]:
    return [
        ("Events published", "ops", [
            (f"sum by (topic) (rate(kiln_events_published_total{{{sel}}}[{RATE}]))", "{{topic}}"),
        ]),
        ("Events handled, by outcome", "ops", [
            (
                f"sum by (consumer, outcome) (rate(kiln_events_handled_total{{{sel}}}[{RATE}]))",
                "{{consumer}} {{outcome}}",
            ),
        ]),
        ("Oldest unpublished outbox row", "s", [
            (f"max by ({by}) (kiln_outbox_oldest_pending_age_seconds{{{sel}}})", f"{{{{{by}}}}}"),
        ]),
        ("Consumer lag", "short", [
            (f"sum by (group) (kiln_consumer_lag_records{{{sel}}})", "{{group}}"),
        ]),
        ("Events dead-lettered (1 h)", "short", [
            (
                f"sum by (consumer, topic) "
                f"(increase(kiln_events_dead_lettered_total{{{sel}}}[1h]))",
                "{{consumer}} from {{topic}}",
            ),
        ]),
    ]  # fmt: skip


def work_panels(sel: str, by: str) -> list[Panel]:
    return [
        ("Jobs by state", "short", [
            (f"sum by ({by}, table, state) (kiln_jobs{{{sel}}})", f"{{{{{by}}}}} {{{{state}}}}"),
        ]),
        ("Celery queue depth", "short", [
            (f"sum by (queue) (kiln_celery_queue_depth{{{sel}}})", "{{queue}}"),
        ]),
        ("Tasks finished, by outcome", "ops", [
            (
                f"sum by (task, outcome) (rate(kiln_celery_tasks_total{{{sel}}}[{RATE}]))",
                "{{task}} {{outcome}}",
            ),
        ]),
    ]  # fmt: skip


def health_panels(sel: str) -> list[Panel]:
    return [
        ("Processes ready", "short", [
            (f"min by (service, process) (kiln_ready{{{sel}}})", "{{service}} {{process}}"),
            (
                f"sum by (service, process) (up{{{also(sel)}job=~'kiln-.*'}})",
                "up {{service}} {{process}}",
            ),
        ]),
        ("Dependencies up", "short", [
            (
                f"min by (service, dependency) (kiln_dependency_up{{{sel}}})",
                "{{service}} {{dependency}}",
            ),
        ]),
    ]  # fmt: skip


def serving_panels(sel: str) -> list[Panel]:
    return [
        ("Predictions per second, by endpoint version", "ops", [
            (
                f"sum by (endpoint, version) (rate(kiln_predictions_total{{{sel}}}[{RATE}]))",
                "{{endpoint}} v{{version}}",
            ),
        ]),
        ("Flagged for labelling per second", "ops", [
            (
                f"sum by (endpoint, version) "
                f"(rate(kiln_predictions_flagged_total{{{sel}}}[{RATE}]))",
                "{{endpoint}} v{{version}}",
            ),
        ]),
        ("Canary steps, promotions and rollbacks (1 h)", "short", [
            (hourly("kiln_canary_steps_total", sel), "{{endpoint}} steps"),
            (hourly("kiln_canary_promotions_total", sel), "{{endpoint}} promoted"),
            (hourly("kiln_canary_rollbacks_total", sel), "{{endpoint}} rolled back"),
        ]),
        ("Routed models ready on Triton", "short", [
            (f"min by (model) (kiln_triton_model_ready{{{sel}}})", "{{model}}"),
        ]),
    ]  # fmt: skip


def training_panels(sel: str) -> list[Panel]:
    return [
        ("Training workers lost (1 h)", "short", [
            (f"sum (increase(kiln_training_workers_lost_total{{{sel}}}[1h]))", "lost"),
        ]),
    ]  # fmt: skip


def dashboard(
    uid: str, title: str, description: str, rows: list[tuple[str, list[Panel]]]
) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row_title, row in rows:
        panels.append({
            "id": next_id, "type": "row", "title": row_title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": [],
        })  # fmt: skip
        next_id += 1
        y += 1
        for i, (title, unit, queries) in enumerate(row):
            panels.append({
                "id": next_id,
                "type": "timeseries",
                "title": title,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(ord("A") + k), "datasource": DATASOURCE, "expr": expr,
                     "legendFormat": legend}
                    for k, (expr, legend) in enumerate(queries)
                ],
            })  # fmt: skip
            next_id += 1
        y += ((len(row) + 2) // 3) * 8
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["kiln"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [{"title": "Kiln dashboards", "type": "dashboards", "tags": ["kiln"]}],
        "panels": panels,
    }


def dashboards() -> dict[str, dict[str, Any]]:
    out = {
        "kiln-overview.json": dashboard(
            "kiln-overview",
            "Kiln: the loop at a glance",
            "Every service's APIs, events, long work and serving on one page.",
            [
                ("APIs", http_panels("", "service")),
                ("Events", event_panels("", "service")),
                ("Long work", work_panels("", "service")),
                ("Serving", serving_panels("")),
                ("Health", health_panels("") + training_panels("")),
            ],
        )
    }
    for svc in SERVICES:
        sel = f'service="{svc}"'
        rows = [
            ("API", http_panels(sel, "route")),
            ("Events", event_panels(sel, "service")),
        ]
        if svc != "serving":
            rows.append(("Long work", work_panels(sel, "service")))
        if svc == "serving":
            rows.append(("Serving", serving_panels(sel)))
        health = health_panels(sel) + (training_panels(sel) if svc == "training" else [])
        rows.append(("Health", health))
        out[f"kiln-{svc}.json"] = dashboard(
            f"kiln-{svc}", f"Kiln: {svc}", f"The {svc} service's processes.", rows
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args()
    stale = []
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, body in dashboards().items():
        text = json.dumps(body, indent=2) + "\n"
        path = OUT_DIR / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python tools/render_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
