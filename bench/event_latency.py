"""Event latency: outbox commit → handler completion (after its inbox transaction commits).

Runs the same workload on Kafka + PostgreSQL (the local stack from ``kiln infra up``) and on the
embedded bus + SQLite, plus a baseline in the same run: bare Kafka produce → consume with no
database, so the ratio shows what the outbox/inbox machinery adds. Prints progress, then one
JSON object on the last line.

On Kafka the writer (with its relay, as in ``kiln serve``) and the consumer (``kiln consume``)
are separate processes, as deployed; both read the same system-wide monotonic clock. The
embedded bus is in-process by design, so there everything shares one process.

    .venv/bin/python bench/event_latency.py [--events 1000] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kiln_core.bus import Bus, open_bus  # noqa: E402
from kiln_core.catalog import PING_EVENTS  # noqa: E402
from kiln_core.db import Database  # noqa: E402
from kiln_core.events import CloudEvent, new_event  # noqa: E402
from kiln_core.inbox import InboxConsumer  # noqa: E402
from kiln_core.outbox import OutboxRelay, add_event  # noqa: E402
from tests.support.effects import record_effect  # noqa: E402

PING = PING_EVENTS["dataset"]
MIGRATIONS = REPO / "tests" / "support" / "migrations"
PG_URL = "postgresql+asyncpg://kiln:kiln@127.0.0.1:55432/kiln"
KAFKA_URL = "kafka://127.0.0.1:59092"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, latencies_ms: list[float], elapsed_s: float) -> dict[str, float]:
    out = {
        f"{name}_p50_ms": round(percentile(latencies_ms, 50), 2),
        f"{name}_p99_ms": round(percentile(latencies_ms, 99), 2),
        f"{name}_max_ms": round(max(latencies_ms), 2),
        f"{name}_mean_ms": round(statistics.fmean(latencies_ms), 2),
        f"{name}_events_per_s": round(len(latencies_ms) / elapsed_s, 1),
    }
    print(
        f"{name:>10}: " + ", ".join(f"{k.removeprefix(name + '_')}={v}" for k, v in out.items()),
        file=sys.stderr,
    )
    return out


async def consume_until(db: Database, bus: Bus, events: int, ready: Any = None) -> dict[str, float]:
    """Apply events through an inbox consumer; returns completion times by event id."""
    done: dict[str, float] = {}
    finished = asyncio.Event()
    consumer = InboxConsumer("bench", db, bus, {PING.event_type: record_effect})

    async def mark_done(event: CloudEvent) -> None:
        done[event.id] = time.monotonic()
        if len(done) >= events:
            finished.set()

    consumer.after_commit = mark_done
    stop = asyncio.Event()
    await consumer.start()
    await consumer.consumer.wait_assigned()  # type: ignore[union-attr]
    task = asyncio.create_task(consumer.run(stop))
    if ready is not None:
        ready()
    await asyncio.wait_for(finished.wait(), 300)
    stop.set()
    await task
    return done


async def consumer_process(db_url: str, schema: str, bus_url: str, events: int, out: str) -> None:
    db = Database(db_url, schema=schema)
    bus = open_bus(bus_url)
    await bus.start()
    done = await consume_until(db, bus, events, ready=lambda: print("ready", flush=True))
    Path(out).write_text(json.dumps(done))
    await bus.stop()
    await db.dispose()


async def outbox_to_handler(
    db: Database, bus: Bus, events: int, rate: float, *, separate_consumer: bool
) -> tuple[list[float], float]:
    committed: dict[str, float] = {}
    relay = OutboxRelay(db, bus, service="bench")
    stop = asyncio.Event()
    if separate_consumer:
        out = tempfile.mktemp(suffix=".json")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--consumer",
            db.url,
            db.schema,
            bus.url,
            str(events),
            out,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"consumer process failed to start: {line!r}")
        consuming: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
    else:
        consuming = asyncio.ensure_future(consume_until(db, bus, events))
    tasks = [asyncio.create_task(relay.run(stop))]
    await asyncio.sleep(0.5)

    # Open loop: each write starts at its scheduled time whatever earlier writes are doing,
    # as independent API requests would (the pool allows 20 concurrent transactions).
    interval = 1.0 / rate
    started = time.monotonic()
    writes: list[asyncio.Task[None]] = []

    async def write_one() -> None:
        ping_id = uuid.uuid4().hex
        event = new_event(PING(ping_id=ping_id, origin="bench", sent_at=datetime.now(UTC)), ping_id)
        async with db.transaction() as session:
            await add_event(session, event)
        committed[event.id] = time.monotonic()  # the commit woke the relay (and NOTIFYed)

    for i in range(events):
        writes.append(asyncio.create_task(write_one()))
        if (i + 1) % 250 == 0:
            print(f"  offered {i + 1}/{events}, committed {len(committed)}", file=sys.stderr)
        next_at = started + (i + 1) * interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*writes)
    result = await asyncio.wait_for(consuming, 300)
    elapsed = time.monotonic() - started
    stop.set()
    await asyncio.gather(*tasks)
    done = json.loads(Path(out).read_text()) if separate_consumer else result
    return [(done[k] - committed[k]) * 1000 for k in committed], elapsed


async def bare_kafka(events: int, rate: float) -> tuple[list[float], float]:
    """Baseline: produce (acks=all) → consumer group delivery, no database at all."""
    bus = open_bus(f"{KAFKA_URL}?namespace=bench{uuid.uuid4().hex[:8]}")
    await bus.start()
    consumer = bus.consumer(["kiln.dataset"], "bench-raw")
    await consumer.start()
    await consumer.wait_assigned()
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    stop = asyncio.Event()

    async def handle(record: Any) -> None:
        latencies.append((time.perf_counter() - sent[record.value]) * 1000)
        if len(latencies) >= events:
            stop.set()

    task = asyncio.create_task(consumer.run(handle, stop))
    interval = 1.0 / rate
    started = time.perf_counter()
    for i in range(events):
        value = uuid.uuid4().bytes
        sent[value] = time.perf_counter()
        await bus.publish("kiln.dataset", value, value)
        next_at = started + (i + 1) * interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.wait_for(stop.wait(), 120)
    elapsed = time.perf_counter() - started
    await task
    await consumer.stop()
    await bus.stop()
    return latencies, elapsed


async def main(events: int, rate: float) -> dict[str, Any]:
    from sqlalchemy import text

    result: dict[str, Any] = {"events": events, "rate_per_s": rate}

    print("kafka + postgres: outbox commit -> relay -> kafka -> inbox commit", file=sys.stderr)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    db = Database(PG_URL, schema=schema)
    await db.migrate(MIGRATIONS)
    bus = open_bus(f"{KAFKA_URL}?namespace={schema}")
    await bus.start()
    try:
        lat, elapsed = await outbox_to_handler(db, bus, events, rate, separate_consumer=True)
        result.update(summary("kafka", lat, elapsed))
    finally:
        await bus.stop()
        async with db.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await db.dispose()

    print("embedded bus + sqlite", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/bench.db", schema="bench")
        await db.migrate(MIGRATIONS)
        bus = open_bus(f"embedded://bench{uuid.uuid4().hex[:8]}")
        lat, elapsed = await outbox_to_handler(db, bus, events, rate, separate_consumer=False)
        result.update(summary("embedded", lat, elapsed))
        await db.dispose()

    print("baseline: bare kafka produce -> consume", file=sys.stderr)
    lat, elapsed = await bare_kafka(events, rate)
    result.update(summary("bare_kafka", lat, elapsed))
    result["kafka_p99_over_bare_kafka_p99"] = round(
        result["kafka_p99_ms"] / max(result["bare_kafka_p99_ms"], 0.001), 2
    )
    result["kafka_p99_target_ms"] = 50
    result["kafka_p99_meets_target"] = result["kafka_p99_ms"] < 50
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--consumer":
        url, schema_name, bus_url, count, out_file = sys.argv[2:7]
        asyncio.run(consumer_process(url, schema_name, bus_url, int(count), out_file))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="events per second offered")
    args = parser.parse_args()
    if args.events < 1:
        parser.error("--events must be positive")
    print(json.dumps(asyncio.run(main(args.events, args.rate))))
