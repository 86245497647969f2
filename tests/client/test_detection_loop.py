"""The detection loop of ``kiln demo --task detection --stack local`` against Kiln as
``kiln up`` runs it (each service's API, event and worker processes behind a gateway, on the
real PostgreSQL, Kafka, MinIO, Redis and the shared Triton), at a small scale: ingest, boxes
drawn and reviewed, training on the worker process, the mAP gate, serving, flagged uncertain
images with box pre-labels, relabelling, retraining and the canary."""

from __future__ import annotations

import pytest

from kiln_cli.demo import Kiln
from kiln_cli.demo_detection import run_detection_loop
from kiln_client import AsyncKiln, ClientSettings
from kiln_core.settings import Settings
from tests.client.conftest import RunningKiln

# Two trainings on a worker process, two Triton loads and a canary on a shared 2-core box.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


async def test_the_detection_loop_closes_over_kiln_up(kiln_up: RunningKiln) -> None:
    said: list[str] = []
    # Tokens signed as the services verify them (their default secret, like kiln_up.token).
    async with AsyncKiln(settings=ClientSettings(url=kiln_up.url, timeout_s=120)) as client:
        result = await run_detection_loop(
            Kiln(client, Settings()),
            seed=5,
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
    one, two = result["rounds"]
    assert one.labelled == 50 + 10 and one.corrected > 0  # review caught drawn mistakes
    assert one.model_version == 1 and one.val_map50 is not None
    assert 0.0 <= result["served_map50"] <= 1.0
    assert two.flagged > 0 and two.labelled == two.flagged  # flagged images were relabelled
    assert two.model_version == 2  # retrained, rolled out as a canary and promoted
    assert any("canary analysis promoted v2" in line for line in said), said
