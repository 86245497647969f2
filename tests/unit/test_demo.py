"""The README's first command: `kiln demo` on the embedded defaults, nothing installed: the
whole loop on the handwritten digits, from a process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_closed_loop_on_embedded_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "kiln_cli.main", "demo", "--out", str(tmp_path / "out")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["served_accuracy"] >= 0.95
    assert result["round2_accuracy"] >= result["served_accuracy"]
    assert result["rounds"] == 2 and result["events"] > 0
    # one trace runs from the labels through training and the registry into serving
    assert set(result["trace_services"]) >= {
        "dataset",
        "annotation",
        "training",
        "registry",
        "serving",
    }, result["trace_services"]
    assert (tmp_path / "out" / "traces.jsonl").exists()
    assert "round 2" in proc.stdout  # the summary table
