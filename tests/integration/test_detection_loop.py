"""The detection loop of ``kiln demo --task detection`` over the real stack: every service
in this process on PostgreSQL, Kafka, MinIO and the shared Triton (schemas, topics and
bucket of this test's own), at a small scale so it runs in a few minutes: ingest, boxes
drawn and reviewed, training, the mAP gate, serving, flagged uncertain images with box
pre-labels, relabelling, retraining and the canary."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from kiln_cli.demo import Kiln, embedded_services
from kiln_cli.demo_detection import run_detection_loop
from kiln_core.db import Database
from kiln_core.settings import Settings
from tests.conftest import require_service, stack_url
from tests.serving.conftest import unload_all

# Two trainings, two Triton loads and a canary on a shared 2-core box: minutes, not seconds.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]
SERVICES = ("dataset", "annotation", "training", "registry", "serving")


async def test_the_detection_loop_closes_over_the_real_stack(
    tmp_path: Path, unique: str, pg_url: str, kafka_url: str, s3_url: str
) -> None:
    triton = stack_url("triton_url")
    require_service("Triton", triton.replace("grpc://", "http://"))
    settings = Settings(
        database_url=pg_url,
        db_schema_prefix=f"t{unique}_",
        bus_url=kafka_url,
        storage_url=s3_url.replace("/kiln?", f"/t{unique}?"),
        triton_url=triton,
        celery_broker_url="memory://",
    )
    said: list[str] = []
    try:
        async with embedded_services(tmp_path, settings=settings) as (clients, runtime_settings):
            result = await run_detection_loop(
                Kiln(clients, runtime_settings),
                seed=3,
                mistake_rate=0.2,
                # An undertrained detector is unsure of nearly everything: flags plenty.
                threshold=0.9,
                say=said.append,
                scale=0.1,
                train_params={
                    "input_size": 64,
                    "image_mode": "L",
                    "width": 16,
                    "epochs": 3,
                    "batch_size": 8,
                },
                map50_gate=0.0,
                # Three epochs of a small detector on 60 canvases: its APs swing from run to run.
                max_drops=(1.0, 1.0),
            )
    finally:
        await unload_all(settings, triton.removeprefix("grpc://"))
        db = Database(pg_url, schema="public")
        async with db.engine.begin() as conn:
            for service in SERVICES:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "t{unique}_{service}" CASCADE'))
        await db.dispose()
    one, two = result["rounds"]
    assert one.labelled == 50 + 10 and one.corrected > 0  # review caught drawn mistakes
    assert one.model_version == 1 and one.val_map50 is not None
    assert 0.0 <= result["served_map50"] <= 1.0
    assert two.flagged > 0 and two.labelled == two.flagged  # flagged images were relabelled
    assert two.model_version == 2  # retrained, rolled out as a canary and promoted
    assert 0.0 <= result["round2_map50"] <= 1.0
    assert any("canary analysis promoted v2" in line for line in said), said
