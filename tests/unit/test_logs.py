"""Logs people can read: readable lines at a terminal and JSON otherwise, no ANSI escapes in
JSON, kombu's hostname warning silenced at its logger, and an outage logged when it starts, as
a summary while it lasts and when it ends, not a traceback per retry."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from kombu import Connection

from kiln_core.outage import Outage
from kiln_core.telemetry import setup_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_unless_a_terminal_reads_them() -> None:
    piped = io.StringIO()
    setup_logging("dataset", stream=piped)
    logging.getLogger("kiln.test").warning("import finished", extra={"job_id": "j1"})
    record = json.loads(piped.getvalue().splitlines()[-1])
    assert record["message"] == "import finished" and record["job_id"] == "j1"
    assert record["service"] == "dataset" and record["level"] == "warning"

    terminal = Terminal()
    setup_logging("dataset", stream=terminal)
    logging.getLogger("kiln.test").warning("import finished", extra={"job_id": "j1"})
    line = terminal.getvalue().splitlines()[-1]
    assert "kiln.test: import finished  job_id=j1" in line and not line.startswith("{")

    forced = Terminal()
    setup_logging("dataset", as_json=True, stream=forced)  # KILN_LOG_JSON=true wins
    logging.getLogger("kiln.test").warning("x")
    assert json.loads(forced.getvalue().splitlines()[-1])["message"] == "x"


def test_no_ansi_escape_reaches_a_json_line() -> None:
    piped = io.StringIO()
    setup_logging("serving", stream=piped)
    logging.getLogger("kiln.test").warning(
        "\x1b[1m\x1b[32mready\x1b[0m", extra={"detail": "\x1b[31mred\x1b[0m"}
    )
    text = piped.getvalue()
    assert "\x1b" not in text and "\\u001b" not in text
    record = json.loads(text.splitlines()[-1])
    assert record["message"] == "ready" and record["detail"] == "red"


def test_kombus_hostname_warning_is_silenced() -> None:
    piped = io.StringIO()
    setup_logging("dataset", stream=piped)
    # An in-process broker has no host: kombu warns about it on every connection it describes.
    Connection("memory://").info()
    assert "No hostname" not in piped.getvalue()
    logging.getLogger("kombu.connection").warning("a real kombu problem")
    assert "a real kombu problem" in piped.getvalue()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_when_it_starts_while_it_lasts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = Outage(logging.getLogger("kiln.test"), "Triton", summary_every_s=60, clock=clock)
    with caplog.at_level(logging.INFO, logger="kiln.test"):
        for _ in range(121):  # a retry every second for two minutes
            outage.failed(ConnectionError("connection refused"))
            clock.now += 1
        outage.recovered()
        outage.recovered()  # nothing more to say
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4, messages
    assert messages[0] == "Triton failing: ConnectionError: connection refused; retrying"
    assert messages[1].startswith("Triton still failing after 60 s (61 attempts")
    assert messages[2].startswith("Triton still failing after 120 s")
    assert messages[3] == "Triton working again after 121 s (121 failed attempts)"
    assert all(r.exc_info is None for r in caplog.records)  # no traceback per retry
