"""The soak, bounded for CI: ``bench/soak.py`` runs the local stack as real processes under
mixed load (uploads, annotation, training jobs, predictions) for a little over a minute; no
operation may fail and every process's memory must level off (the criterion is the bench's,
see its docstring). Counts and memory are asserted, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO, require_service, stack_url

pytestmark = pytest.mark.integration

SOAK_SECONDS = 75


def run_soak() -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "soak.py"),
            "--duration",
            str(SOAK_SECONDS),
            "--sample-every",
            "1",
            # A job every 12 s: each third of the window sees a few training runs, so the
            # worker's peak in each third is its real peak, not luck of timing.
            "--train-every",
            "12",
            # A Redis database of its own: a bench soak (db 13) may run at the same time.
            "--redis-db",
            "14",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"the soak printed nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in result, f"{result['error']}\n{proc.stderr[-4000:]}"
    return result


# A hang guard, not a speed check: starting 15 processes, the warm-up (one labelled version
# and a registered model) and the 75 s window took 300-330 s on this 2-core box.
@pytest.mark.timeout(900)
def test_mixed_load_has_no_errors_and_memory_levels_off() -> None:
    for name in ("database_url", "bus_url", "storage_url", "celery_broker_url", "triton_url"):
        url = stack_url(name)
        require_service(name, url.replace("grpc://", "http://"))
    result = run_soak()

    assert result["errors"] == 0, result["error_examples"]
    ops = result["operations"]
    for op in ("draft", "upload", "commit", "lease", "submit", "predict", "train_job"):
        assert ops.get(op, {}).get("count", 0) > 0, f"no {op} in the window: {ops}"
    # Every upload version went through annotation back into the dataset as labels, and
    # every trained model reached the registry.
    assert result["upload_versions"] >= 5
    assert result["labelled_versions"] == result["upload_versions"]
    assert result["training_jobs_succeeded"] >= 2
    assert result["training_jobs_succeeded"] == result["training_jobs"]
    assert result["model_versions_registered"] >= result["training_jobs_succeeded"]
    assert result["predictions"] >= 100

    memory = result["memory"]
    assert result["processes"] == 15 and len(memory) == 16  # the stack's processes + driver
    grew = {
        name: {k: v for k, v in m.items() if k != "timeline_mib"}
        for name, m in memory.items()
        if name != "driver" and not m["levelled"]
    }
    assert not grew, f"memory did not level off ({result['memory_criterion']}): {grew}"
    assert result["memory_levelled"] is True and result["ok"] is True
