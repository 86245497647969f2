"""The server span a request runs in when spans are not exported: real ids, the caller's trace
kept, current only while the request is served."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context

from kiln_core import http
from kiln_core.telemetry import extract_context

CALLER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def edge(monkeypatch: pytest.MonkeyPatch) -> http.EdgeMiddleware:
    monkeypatch.setattr(http, "_exporting", lambda _provider: False)
    return http.EdgeMiddleware(None, service="test", max_body=1024)  # type: ignore[arg-type]


def test_a_request_without_a_caller_trace_gets_a_new_sampled_one(edge: http.EdgeMiddleware) -> None:
    before = trace.get_current_span().get_span_context()
    with edge.server_span("POST", "/x", Context(), "rid") as span:
        current = trace.get_current_span().get_span_context()
        assert current is span.get_span_context()
        assert current.is_valid and current.trace_flags.sampled and not span.is_recording()
    assert trace.get_current_span().get_span_context() == before
    with edge.server_span("POST", "/x", Context(), "rid") as other:
        assert other.get_span_context().trace_id != current.trace_id


def test_a_request_keeps_its_callers_trace_with_a_span_of_its_own(
    edge: http.EdgeMiddleware,
) -> None:
    ctx = extract_context([("traceparent", TRACEPARENT)])
    with edge.server_span("POST", "/x", ctx, "rid"):
        current = trace.get_current_span().get_span_context()
        assert current.trace_id == CALLER_TRACE
        assert current.span_id != 0x00F067AA0BA902B7


def test_the_span_stops_being_current_when_the_request_fails(edge: http.EdgeMiddleware) -> None:
    with pytest.raises(RuntimeError), edge.server_span("POST", "/x", Context(), "rid"):
        raise RuntimeError("the handler failed")
    assert not trace.get_current_span().get_span_context().is_valid


async def test_a_request_id_that_is_not_utf8_is_echoed_byte_for_byte() -> None:
    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        assert scope["state"]["request_id"] == "caf\xe9"
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    sent: list[dict] = []  # type: ignore[type-arg]

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": b"", "more_body": False}

    edge = http.EdgeMiddleware(app, service="test", max_body=1024)  # type: ignore[arg-type]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(b"x-request-id", b"caf\xe9")],
    }
    await edge(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 200
    assert (b"x-request-id", b"caf\xe9") in sent[0]["headers"]
