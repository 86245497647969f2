from __future__ import annotations

import json
import logging

from kiln_core.telemetry import JsonFormatter, extract_context, inject_headers, trace_id_of, tracer


def test_trace_context_survives_record_headers() -> None:
    with tracer().start_as_current_span("produce"):
        sent = trace_id_of()
        headers = inject_headers()
    assert sent and [k for k, _ in headers] == ["traceparent"]
    ctx = extract_context(headers)
    with tracer().start_as_current_span("consume", context=ctx):
        assert trace_id_of() == sent


def test_json_logs_carry_the_trace_id_and_extras() -> None:
    formatter = JsonFormatter("dataset")
    record = logging.makeLogRecord(
        {
            "msg": "imported %d items",
            "args": (3,),
            "levelname": "INFO",
            "name": "kiln.test",
            "dataset_id": "ds-1",
        }
    )
    with tracer().start_as_current_span("import"):
        expected = trace_id_of()
        line = json.loads(formatter.format(record))
    assert line["message"] == "imported 3 items"
    assert line["service"] == "dataset"
    assert line["trace_id"] == expected
    assert line["dataset_id"] == "ds-1"
    outside = json.loads(formatter.format(record))
    assert "trace_id" not in outside
