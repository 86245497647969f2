"""End to end over real Kafka, in one trace: a client (the web frontend) that carries one W3C
``traceparent`` through a labelling session sees the upload, the tasks the event made, the
annotation and review calls, the label commit and the labelled version it produced as one
trace across both services."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kiln_core.telemetry import current_traceparent, setup_tracing, tracer
from tests.annotation.test_workflow import as_user
from tests.conftest import eventually
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import make_dataset


def capture_spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = setup_tracing("tests")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.mark.integration
@pytest.mark.parametrize("service_settings", ["stack"], indirect=True)
async def test_version_to_labelled_version_over_kafka_is_one_trace(
    services: dict[str, Any],
) -> None:
    data, ann, settings = services["dataset"], services["annotation"], services["settings"]
    assert settings.bus_url.startswith("kafka://")
    spans = capture_spans()
    with tracer("tests").start_as_current_span("labelling session") as session:
        trace_id = session.get_span_context().trace_id
        carried = {"traceparent": current_traceparent() or ""}
        ds = (await make_dataset(data, task_type="classification"))["id"]
        r = await ann.post(
            "/v1/projects",
            headers=carried,
            json={
                "name": f"trace-{ds}",
                "dataset_id": ds,
                "label_schema": {
                    "kind": "classification",
                    "labels": [{"name": "dark"}, {"name": "light"}],
                },
            },
        )
        pid = r.json()["id"]
        draft = (await data.post(f"/v1/datasets/{ds}/drafts", json={}, headers=carried)).json()
        await data.post(
            f"/v1/datasets/{ds}/drafts/{draft['id']}/items",
            headers=carried,
            files=[("files", ("a.png", png((5, 5, 5)), "image/png"))],
        )
        await data.post(f"/v1/datasets/{ds}/drafts/{draft['id']}/commit", json={}, headers=carried)

        async def task() -> dict[str, Any] | None:
            r = await ann.post(
                f"/v1/projects/{pid}/lease",
                headers={**as_user(settings, "alice", "annotator"), **carried},
            )
            return r.json() if r.status_code == 200 else None

        leased = await eventually(task, timeout_s=30)
        item = leased["items"][0]["item_id"]
        await ann.post(
            f"/v1/tasks/{leased['id']}/submission",
            headers={**as_user(settings, "alice", "annotator"), **carried},
            json={"labels": {item: [{"type": "class", "label": "dark"}]}},
        )
        await ann.post(
            f"/v1/tasks/{leased['id']}/review",
            headers={**as_user(settings, "rita", "reviewer"), **carried},
            json={"accept": True},
        )

        async def labelled() -> bool:
            r = await data.get(f"/v1/datasets/{ds}/versions/2")
            return r.status_code == 200 and r.json()["lineage"]["source"] == "labels"

        await eventually(labelled, timeout_s=30)

    def in_trace(**attributes: str) -> list[Any]:
        return [
            s
            for s in spans.get_finished_spans()
            if s.context.trace_id == trace_id
            and all((s.attributes or {}).get(k) == v for k, v in attributes.items())
        ]

    # the upload, in the dataset API
    assert in_trace(**{"kiln.service": "dataset", "http.request.method": "POST"})
    # the version event made the tasks, in annotation's consumer over Kafka
    created = [
        s for s in in_trace(**{"kiln.consumer": "annotation"}) if "version.created" in s.name
    ]
    assert created, "annotation did not handle version.created in the trace"
    # labelling and review, in the annotation API
    paths = {
        (s.attributes or {}).get("url.path") for s in in_trace(**{"kiln.service": "annotation"})
    }
    assert f"/v1/tasks/{leased['id']}/review" in paths
    # the commit came back to the dataset service, which made the labelled version
    committed = [
        s for s in in_trace(**{"kiln.consumer": "dataset"}) if "labels.committed" in s.name
    ]
    assert committed, "dataset did not handle labels.committed in the trace"
