"""Every process `kiln up` runs answers /metrics, /healthz and /readyz on a port of its own,
and the metrics move when their event happens: an event dead-lettered, a job queued and run."""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from kiln_client import Kiln
from kiln_core.bus import open_bus
from tests.client.conftest import RunningKiln

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A process's samples: (name, sorted labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(port: int, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in scrape(port).items() if n == name and wanted <= set(ls))


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_every_process_serves_metrics_health_and_readiness(kiln_up: RunningKiln) -> None:
    # One API, event and (where the service has long work) worker process per service.
    assert len(kiln_up.probes) == 13
    for process, port in kiln_up.probes.items():
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200, process
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, (process, ready.text)
        assert all(v == "ok" for v in ready.json()["checks"].values()), process
        r = httpx.get(f"{base}/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        families = {f.name for f in text_string_to_metric_families(r.text)}
        assert "kiln_ready" in families, process
        # The scrape adds the service label; no series may carry its own, nor a _created twin.
        assert not re.search(r'[{,]service="', r.text), process
        assert "_created" not in r.text, process
    workers = [p for p in kiln_up.probes if p.endswith("-worker")]
    assert sorted(workers) == ["annotation-worker", "dataset-worker", "training-worker"]
    assert (
        "broker"
        in httpx.get(f"http://127.0.0.1:{kiln_up.probes['dataset-worker']}/readyz").json()["checks"]
    )


def test_sampled_gauges_are_exported_by_each_event_process(kiln_up: RunningKiln) -> None:
    port = kiln_up.probes["training-events"]

    def sampled() -> bool:
        names = {name for name, _ in scrape(port)}
        return {
            "kiln_outbox_pending_rows",
            "kiln_outbox_oldest_pending_age_seconds",
            "kiln_consumer_lag_records",
            "kiln_celery_queue_depth",
        } <= names

    wait_until(sampled, "the training event process's sampled gauges")
    lags = [ls for n, ls in scrape(port) if n == "kiln_consumer_lag_records"]
    assert all(dict(ls)["group"] == "kiln-training" for ls in lags)


def test_a_dead_lettered_event_moves_the_consumers_counter(kiln_up: RunningKiln) -> None:
    port = kiln_up.probes["annotation-events"]
    labels = {"consumer": "annotation", "topic": "kiln.dataset"}
    before = value(port, "kiln_events_dead_lettered_total", **labels)

    async def publish_poison() -> None:
        bus = open_bus(kiln_up.env["KILN_BUS_URL"])
        await bus.start()
        try:
            await bus.publish("kiln.dataset", b"not a CloudEvent", b"poison")
        finally:
            await bus.stop()

    asyncio.run(publish_poison())
    wait_until(
        lambda: value(port, "kiln_events_dead_lettered_total", **labels) > before,
        "annotation to dead-letter the poison record",
    )
    assert value(port, "kiln_events_handled_total", consumer="annotation", outcome="dead_lettered")


def _image_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for label, shade in (("dark", 20), ("light", 230)):
            for i in range(2):
                buf = io.BytesIO()
                Image.new("L", (8, 8), shade + i).save(buf, format="PNG")
                archive.writestr(f"train/{label}/{uuid.uuid4().hex}.png", buf.getvalue())
    return path


def test_a_queued_job_moves_the_job_and_task_metrics(kiln_up: RunningKiln, tmp_path: Path) -> None:
    api, worker = kiln_up.probes["dataset-api"], kiln_up.probes["dataset-worker"]
    events = kiln_up.probes["dataset-events"]
    enqueued = value(api, "kiln_jobs_enqueued_total", queue="dataset")
    ran = value(worker, "kiln_celery_tasks_total", task="kiln.dataset.run_job", outcome="succeeded")
    with Kiln(kiln_up.url, kiln_up.token()) as kiln:
        ds = kiln.datasets.create(f"metrics-{uuid.uuid4().hex[:6]}")
        job = kiln.datasets.import_archive(ds["id"], _image_zip(tmp_path / "images.zip"))
    assert job["status"] == "succeeded", job
    assert value(api, "kiln_jobs_enqueued_total", queue="dataset") == enqueued + 1
    wait_until(
        lambda: (
            value(
                worker, "kiln_celery_tasks_total", task="kiln.dataset.run_job", outcome="succeeded"
            )
            == ran + 1
        ),
        "the worker to count the task",
    )
    assert value(worker, "kiln_celery_task_seconds_count", task="kiln.dataset.run_job") >= 1
    wait_until(
        lambda: value(events, "kiln_jobs", table="jobs", state="succeeded") >= 1,
        "the event process to sample the job table",
    )
    assert value(events, "kiln_celery_queue_depth", queue="dataset") == 0
