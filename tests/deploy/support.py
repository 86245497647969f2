"""Shared helpers of the deployment tests: where things are and how a missing tool fails."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
SERVICES = ("dataset", "annotation", "training", "registry", "serving")
# Services with long work, hence a Celery worker process.
WORKER_SERVICES = ("dataset", "annotation", "training", "registry")
PORTS = {"dataset": 8101, "annotation": 8102, "training": 8103, "registry": 8104, "serving": 8105}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def cache_dir() -> Path:
    return Path(os.environ.get("KILN_CACHE_DIR") or Path.home() / ".cache" / "kiln")


def missing_tool(message: str) -> NoReturn:
    """A validator that is not installed fails in CI and skips on a developer's machine."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def find_uv() -> str | None:
    """The uv that ``./kiln`` installs, else one on PATH."""
    pinned = cache_dir() / "tools" / "uv-0.13.9" / "bin" / "uv"
    if pinned.is_file():
        return str(pinned)
    return shutil.which("uv")


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())
