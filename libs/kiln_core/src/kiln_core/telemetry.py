"""Tracing and logs: OpenTelemetry traces carried through Kafka headers, and JSON logs that
carry the trace id (the metrics are in :mod:`kiln_core.metrics`)."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
memory_exporter: InMemorySpanExporter | None = None


class JsonLinesSpanExporter(SpanExporter):
    """Finished spans appended to a file, one JSON object per line (trace and span ids in hex,
    times in ns), for runs without a collector such as the demo."""

    def __init__(self, path: str) -> None:
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed on shutdown

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        for span in spans:
            parent = span.parent
            record = {
                "trace_id": f"{span.context.trace_id:032x}",
                "span_id": f"{span.context.span_id:016x}",
                "parent_id": f"{parent.span_id:016x}" if parent else None,
                "name": span.name,
                "kind": span.kind.name,
                "start_ns": span.start_time,
                "end_ns": span.end_time,
                "status": span.status.status_code.name,
                "attributes": {k: v for k, v in (span.attributes or {}).items()},
            }
            self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


def span_processor(exporter: str) -> SpanProcessor | None:
    """The span processor for a ``KILN_TRACE_EXPORTER`` value: none, console, memory, otlp (a
    collector) or ``file:<path>`` (JSON lines)."""
    global memory_exporter
    if exporter == "none":
        return None
    if exporter == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    if exporter == "memory":
        memory_exporter = InMemorySpanExporter()
        return SimpleSpanProcessor(memory_exporter)
    if exporter.startswith("file:"):
        return SimpleSpanProcessor(JsonLinesSpanExporter(exporter.removeprefix("file:")))
    if exporter == "otlp":
        # To a collector over OTLP/gRPC, batched off the request path; the endpoint comes from
        # the standard OTEL_EXPORTER_OTLP_ENDPOINT (compose and k8s point it at the collector).
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        return BatchSpanProcessor(OTLPSpanExporter())
    raise ValueError(f"unknown trace exporter {exporter!r}: none, console, memory, otlp, file:")


def setup_tracing(
    service: str, exporter: str = "none", libraries: bool | None = None
) -> TracerProvider:
    """Install one tracer provider per process (idempotent), exporting as
    :func:`span_processor` says, and with ``libraries`` (default: whenever spans go somewhere
    other than a test's memory) the instrumentations of what Kiln calls."""
    global _provider
    if _provider is not None:
        return _provider
    provider = TracerProvider(resource=Resource.create({"service.name": f"kiln-{service}"}))
    processor = span_processor(exporter)
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _provider = provider
    if libraries if libraries is not None else exporter not in ("none", "memory"):
        instrument_libraries()
    return provider


_instrumentors: list[Any] = []


def instrument_libraries() -> None:
    """The maintained OpenTelemetry instrumentations of what Kiln calls, so a trace shows its
    database statements (SQLAlchemy, engines made from now on), outgoing HTTP (httpx), Kafka
    sends and receives (aiokafka) and Celery task publishing and runs; idempotent."""
    if _instrumentors:
        return
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    for instrumentor in (
        SQLAlchemyInstrumentor(),
        HTTPXClientInstrumentor(),
        AIOKafkaInstrumentor(),
        CeleryInstrumentor(),
    ):
        # Its declared range stops short of SQLAlchemy 2.1, whose engine events it uses are
        # unchanged (tests/integration/test_trace_insides.py checks the spans).
        instrumentor.instrument(skip_dep_check=isinstance(instrumentor, SQLAlchemyInstrumentor))
        _instrumentors.append(instrumentor)


def libraries_instrumented() -> bool:
    return bool(_instrumentors)


def uninstrument_libraries() -> None:
    """Undo :func:`instrument_libraries` (tests)."""
    while _instrumentors:
        _instrumentors.pop().uninstrument()


def tracer(name: str = "kiln") -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(ctx: Context | None = None) -> list[tuple[str, bytes]]:
    """W3C trace context of the current (or given) span as Kafka record headers."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=ctx)
    return [(k, v.encode()) for k, v in carrier.items()]


def extract_context(headers: Iterable[tuple[str, bytes]]) -> Context:
    carrier = {
        k: v.decode(errors="replace") for k, v in headers if k in ("traceparent", "tracestate")
    }
    if not carrier:  # what the propagator would give, without its work on every request
        return Context()
    return _propagator.extract(carrier)


def trace_id_of(ctx: Context | None = None) -> str | None:
    span = trace.get_current_span(ctx)
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    return format(sc.trace_id, "032x")


def attach(ctx: Context) -> object:
    return otel_context.attach(ctx)


def detach(token: object) -> None:
    otel_context.detach(token)  # type: ignore[arg-type]


# Colour and cursor codes some libraries put in their messages: never inside a JSON log line.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the active trace and span ids; no ANSI escapes."""

    _skip = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": strip_ansi(record.getMessage()),
        }
        sc = trace.get_current_span().get_span_context()
        if sc.is_valid:
            out["trace_id"] = format(sc.trace_id, "032x")
            out["span_id"] = format(sc.span_id, "016x")
        for key, value in vars(record).items():
            if key not in self._skip and not key.startswith("_"):
                out[key] = strip_ansi(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exception"] = strip_ansi(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """One readable line for a person at a terminal: time, level, logger, message and the
    record's extra fields as ``key=value``; the level coloured when ``colour``."""

    _skip = JsonFormatter._skip
    _colours = {"WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[31;1m"}

    def __init__(self, colour: bool = False) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        level = f"{record.levelname:<7}"
        if self.colour and record.levelname in self._colours:
            level = f"{self._colours[record.levelname]}{level}\x1b[0m"
        extras = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in self._skip and not k.startswith("_") and k != "service"
        )
        line = f"{when} {level} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _KnownChatter(logging.Filter):
    """Third-party messages that say nothing to a Kiln operator, dropped where they are made."""

    def filter(self, record: logging.LogRecord) -> bool:
        # kombu, once per connection to an in-process (memory://) broker, which has no host.
        return not record.getMessage().startswith("No hostname was supplied")


def setup_logging(
    service: str, level: str = "INFO", as_json: bool | None = None, stream: Any = None
) -> None:
    """The one logging setup of a process: JSON lines when ``as_json`` (None: unless the
    stream is a terminal, where a person reads readable lines)."""
    stream = stream or sys.stderr
    terminal = bool(getattr(stream, "isatty", lambda: False)())
    handler = logging.StreamHandler(stream)
    if as_json if as_json is not None else not terminal:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(TextFormatter(colour=terminal))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "alembic", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    chatter = logging.getLogger("kombu.connection")
    if not any(isinstance(f, _KnownChatter) for f in chatter.filters):
        chatter.addFilter(_KnownChatter())


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, to store with work that continues later
    elsewhere (a queued job), or None outside any trace."""
    for key, value in inject_headers():
        if key == "traceparent":
            return value.decode()
    return None


def continued_span(name: str, traceparent: str | None, **attributes: Any) -> Any:
    """A span continuing the trace of a stored ``traceparent`` (a new trace without one), made
    current for the ``with`` block, so events emitted in it carry that trace on."""
    context = extract_context([("traceparent", traceparent.encode())]) if traceparent else None
    return tracer("kiln").start_as_current_span(name, context=context, attributes=attributes)
