"""The README's first command: `kiln demo` on the embedded defaults, nothing installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_loop_on_embedded_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "kiln_cli.main", "demo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True
    assert result["received_by"] == ["annotation", "registry", "serving", "training"]
    assert result["one_trace"] is True
    assert (tmp_path / ".kiln" / "data" / "dataset.db").exists()
