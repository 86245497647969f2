"""Traces with their insides: with the maintained OpenTelemetry instrumentations on, a trace
shows Kiln's database statements (SQLAlchemy on asyncpg), outgoing HTTP (httpx), Kafka sends
in the trace of the event they carry (aiokafka) and Celery task publishing, as children of
Kiln's own spans. On the real PostgreSQL, Kafka and Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from celery import Celery
from opentelemetry import trace
from sqlalchemy import text

from kiln_core import telemetry
from kiln_core.bus import OutgoingRecord, open_bus
from kiln_core.db import Database
from kiln_core.telemetry import inject_headers, instrument_libraries, uninstrument_libraries
from tests.conftest import require_service, stack_url

pytestmark = pytest.mark.integration


@pytest.fixture
def instrumented() -> Iterator[Any]:
    exporter = telemetry.memory_exporter
    assert exporter is not None  # tests/conftest.py exports spans to memory
    instrument_libraries()
    exporter.clear()
    try:
        yield exporter
    finally:
        uninstrument_libraries()


def children_of(exporter: Any, parent: Any) -> list[Any]:
    context = parent.get_span_context()
    return [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == context.span_id
    ]


async def test_database_statements_are_spans_of_the_trace(instrumented: Any, pg_url: str) -> None:
    db = Database(pg_url, schema="public")  # made after instrumenting, as every process does
    try:
        with trace.get_tracer("test").start_as_current_span("handle request") as parent:
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT 41 + 1"))
    finally:
        await db.dispose()
    statements = [s for s in children_of(instrumented, parent) if s.attributes.get("db.system")]
    assert statements, [s.name for s in instrumented.get_finished_spans()]
    assert any("SELECT 41 + 1" in str(s.attributes.get("db.statement")) for s in statements)
    assert statements[0].attributes["db.system"] == "postgresql"


async def test_outgoing_http_is_a_span_of_the_trace(instrumented: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with trace.get_tracer("test").start_as_current_span("call serving") as parent:
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://127.0.0.1:{server.server_address[1]}/v1/ping")
        assert r.status_code == 204
    finally:
        server.shutdown()
    calls = children_of(instrumented, parent)
    assert [s.kind for s in calls] == [trace.SpanKind.CLIENT], [s.name for s in calls]
    status = calls[0].attributes.get("http.response.status_code")
    assert (status or calls[0].attributes.get("http.status_code")) == 204


async def test_a_kafka_send_joins_the_trace_of_the_event_it_carries(
    instrumented: Any, kafka_url: str
) -> None:
    with trace.get_tracer("test").start_as_current_span("emit event") as emitted:
        headers = tuple(inject_headers())
    bus = open_bus(kafka_url)
    await bus.start()
    try:
        # The relay publishes later, outside the request: the record's headers carry its trace.
        await bus.ensure_topics(["kiln.tracing"])
        await bus.publish_many([OutgoingRecord("kiln.tracing", b"{}", b"k", headers)])
    finally:
        await bus.stop()
    sends = [s for s in children_of(instrumented, emitted) if s.kind == trace.SpanKind.PRODUCER]
    assert sends, [s.name for s in instrumented.get_finished_spans()]
    assert sends[0].context.trace_id == emitted.get_span_context().trace_id


def test_celery_task_publishing_is_a_span_of_the_trace(instrumented: Any) -> None:
    broker = stack_url("celery_broker_url")
    require_service("Redis", broker)
    app = Celery("kiln-trace-test", broker=broker.rsplit("/", 1)[0] + "/15")
    app.conf.task_ignore_result = True
    try:
        with trace.get_tracer("test").start_as_current_span("submit job") as parent:
            app.send_task("kiln.test.noop", args=["job-1"], queue="kiln-trace-test")
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge("kiln-trace-test")
        app.close()
    published = [s for s in children_of(instrumented, parent) if "kiln.test.noop" in s.name]
    assert published, [s.name for s in instrumented.get_finished_spans()]
    assert published[0].kind == trace.SpanKind.PRODUCER
