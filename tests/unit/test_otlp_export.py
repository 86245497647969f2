"""``KILN_TRACE_EXPORTER=otlp`` sends spans to an OpenTelemetry collector over OTLP/gRPC (here a
real gRPC server speaking the collector's trace service)."""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from kiln_core.telemetry import span_processor


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.names: list[str] = []

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method name
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.names += [span.name for span in scope_spans.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_reach_an_otlp_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        processor = span_processor("otlp")
        assert processor is not None
        provider = TracerProvider(resource=Resource.create({"service.name": "kiln-test"}))
        provider.add_span_processor(processor)
        with provider.get_tracer("t").start_as_current_span("upload"):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.stop(None)
    assert collector.names == ["upload"]


def test_an_unknown_exporter_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown trace exporter"):
        span_processor("zipkin")
