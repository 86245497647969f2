"""services/<svc>/Dockerfile: multi-stage with uv from the lock, non-root, a health check, and
an install plan (checked offline with ``uv sync --dry-run``) that holds the service it serves."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from tests.deploy.support import PORTS, REPO, SERVICES, find_uv, missing_tool


def dockerfile(svc: str) -> str:
    return (REPO / "services" / svc / "Dockerfile").read_text()


def instructions(text: str) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def final_uv_sync(svc: str) -> list[str]:
    runs = [i for i in instructions(dockerfile(svc)) if i.startswith("RUN") and "uv sync" in i]
    assert runs, f"{svc}: no uv sync"
    words = shlex.split(runs[-1])
    return words[words.index("uv") + 1 :]


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_is_multi_stage_non_root_and_healthchecked(svc: str) -> None:
    lines = instructions(dockerfile(svc))
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 3, "uv, build and runtime stages"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in line for line in lines)
    assert any(line.startswith("ENTRYPOINT ") and '"kiln"' in line for line in lines)
    cmd = next(line for line in lines if line.startswith("CMD "))
    assert f'"serve", "{svc}"' in cmd and str(PORTS[svc]) in cmd
    sync = final_uv_sync(svc)
    assert "--frozen" in sync and "--no-dev" in sync
    # The runtime stage copies the virtualenv only, never the sources or the uv cache.
    runtime = lines[lines.index(froms[-1]) :]
    copies = [line for line in runtime if line.startswith("COPY ")]
    assert copies == ["COPY --from=build /opt/kiln /opt/kiln"]


@pytest.mark.parametrize("svc", SERVICES)
def test_image_installs_its_service_and_not_the_others(svc: str, tmp_path: object) -> None:
    uv = find_uv()
    if uv is None:
        missing_tool("uv is not installed; run ./kiln once (it installs the pinned uv)")
    args = [a for a in final_uv_sync(svc) if a != "sync"]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path), "UV_OFFLINE": "1"}
    done = subprocess.run(
        [uv, "sync", "--dry-run", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    planned = set(re.findall(r"^ \+ ([A-Za-z0-9_.-]+)", done.stdout + done.stderr, re.M))
    assert f"kiln-{svc}" in planned
    assert {"kiln-core", "kiln-cli"} <= planned
    assert "nvidia-pytriton" not in planned
    # The kiln command imports kiln_training at start-up, so every image carries it.
    others = {f"kiln-{s}" for s in SERVICES} - {f"kiln-{svc}", "kiln-training"}
    assert not (others & planned), others & planned
