"""A Kiln as `kiln up` runs it (each service's API, event and worker processes, and a gateway)
on the shared real infrastructure, in a schema prefix, Kafka namespace, bucket and Redis
database of this session's own, for the client and the CLI's user commands to talk to."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from sqlalchemy import text

from kiln_cli.gateway import Gateway
from kiln_client import ApiError, Kiln
from kiln_core.auth import issue_token
from kiln_core.db import Database
from kiln_core.settings import Settings
from tests.conftest import drop_namespace, require_service, stack_url
from tests.support.apps import free_port

REPO = Path(__file__).resolve().parents[2]
# Which processes of each service the client's tests need (as `kiln up` starts them);
# annotation for the detection loop over this stack.
PROCESSES = {
    "dataset": ("api", "events", "worker"),
    "annotation": ("api", "events", "worker"),
    "training": ("api", "events", "worker"),
    "registry": ("api", "events"),
    "serving": ("api", "events"),
}


@dataclass
class RunningKiln:
    url: str  # the gateway
    env: dict[str, str]  # what the services run with (and what a token is signed for)
    ports: dict[str, int]
    # Where each process ("dataset-api", "dataset-events", …) serves /metrics and its probes.
    probes: dict[str, int]

    def token(self, who: str = "client-test", *roles: str) -> str:
        settings = Settings()
        return issue_token(who, list(roles or ("admin",)), settings, teams=[settings.default_team])


def _ready(url: str, procs: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
        if dead or time.monotonic() > deadline:
            tails = "\n".join(f"--- {f.name}\n{f.read_text()[-2000:]}" for f in logs.glob("*.log"))
            pytest.fail(f"{url} not ready (exited: {dead})\n{tails}")
        time.sleep(0.3)


@pytest.fixture(scope="package")
def kiln_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningKiln]:
    database, bus = stack_url("database_url"), stack_url("bus_url")
    store, broker = stack_url("storage_url"), stack_url("celery_broker_url")
    for name, url in (("PostgreSQL", database), ("Kafka", bus), ("MinIO", store)):
        require_service(name, url)
    require_service("Redis", broker)
    require_service("Triton", stack_url("triton_url"))
    unique = uuid.uuid4().hex[:8]
    logs = tmp_path_factory.mktemp("kiln-up")
    env = {
        **os.environ,
        "KILN_DATABASE_URL": database,
        "KILN_DB_SCHEMA_PREFIX": f"c{unique}_",
        "KILN_BUS_URL": f"{bus}?namespace=c{unique}",
        "KILN_STORAGE_URL": store.replace("/kiln?", f"/c{unique}?"),
        # A Redis database of its own, so no other test's workers take these tasks.
        "KILN_CELERY_BROKER_URL": f"{broker.rsplit('/', 1)[0]}/{2 + int(unique, 16) % 14}",
        "KILN_TRITON_URL": stack_url("triton_url"),
        "KILN_TRAINING_POOL": "cpu",
        "KILN_TRAINING_SCHEDULE_INTERVAL_S": "0.2",
        "KILN_LOG_LEVEL": "WARNING",
        "KILN_TRACE_EXPORTER": "none",
        "KILN_METRICS_INTERVAL_S": "2",
    }
    env.pop("KILN_HOME", None)
    ports = {service: free_port() for service in PROCESSES}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    probes: dict[str, int] = {}
    verbs = {"api": "serve", "events": "consume", "worker": "worker"}
    for service, kinds in PROCESSES.items():
        for kind in kinds:
            args = [verbs[kind], service]
            if kind == "api":
                args += ["--port", str(ports[service])]
                probes[f"{service}-{kind}"] = ports[service]
            else:
                probes[f"{service}-{kind}"] = free_port()
                args += ["--metrics-port", str(probes[f"{service}-{kind}"])]
            if kind == "worker":
                args += ["--concurrency", "1"]
            with (logs / f"{service}-{kind}.log").open("wb") as log:
                procs[f"{service}-{kind}"] = subprocess.Popen(
                    [sys.executable, "-m", "kiln_cli.main", *args],
                    env=env,
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
    gateway_port = free_port()
    targets = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
    server = uvicorn.Server(
        uvicorn.Config(
            Gateway(targets), host="127.0.0.1", port=gateway_port, log_config=None, lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for port in ports.values():
            _ready(f"http://127.0.0.1:{port}", procs, logs)
        yield RunningKiln(f"http://127.0.0.1:{gateway_port}", env, ports, probes)
    finally:
        server.should_exit = True
        thread.join(10)
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        drop_namespace(bus, f"c{unique}")
        threading.Thread(target=lambda: asyncio.run(_drop_schemas(database, f"c{unique}_"))).start()


async def _drop_schemas(database: str, prefix: str) -> None:
    db = Database(database, schema="public")
    try:
        async with db.engine.begin() as conn:
            for service in PROCESSES:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{prefix}{service}" CASCADE'))
    finally:
        await db.dispose()


def write_image_folder(root: Path, per_class: int = 12, salt: str = "") -> Path:
    """``train/`` and ``val/`` folders of 8×8 grey PNGs, two classes told apart by brightness;
    a ``salt`` (kept in a PNG text chunk) makes files no other test has stored."""
    info = PngInfo()
    if salt:
        info.add_text("salt", salt)
    for split, count in (("train", per_class), ("val", per_class // 2)):
        for label, base in (("dark", 30), ("light", 220)):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = bytes(max(0, min(255, base + (i * 7 + j) % 25 - 12)) for j in range(64))
                image = Image.frombytes("L", (8, 8), pixels)
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", pnginfo=info)
                (folder / f"{label}-{split}-{i}.png").write_bytes(buffer.getvalue())
    return root


@dataclass
class ServedModel:
    dataset_id: str
    model: str
    endpoint: str
    version: int
    images: Path


@pytest.fixture(scope="package")
def served_model(kiln_up: RunningKiln, tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """A tiny two-class image model trained, registered, promoted and served on an endpoint
    (through the client, as a user would)."""
    images = write_image_folder(tmp_path_factory.mktemp("served") / "images")
    run = uuid.uuid4().hex[:6]
    with Kiln(kiln_up.url, kiln_up.token()) as kiln:
        ds = kiln.datasets.create(f"served-{run}")
        kiln.datasets.upload_folder(ds["id"], images, labels_from_folders=True, progress=False)
        kiln.training.ensure_team("client")
        model = f"served-{run}"
        # Training learns of the new version from its event, a moment after the upload commits.
        deadline = time.monotonic() + 60
        while True:
            try:
                job = kiln.training.submit(
                    "image-cnn",
                    ds["id"],
                    team="client",
                    model_name=model,
                    params={
                        "image_size": 8,
                        "image_mode": "L",
                        "width": 8,
                        "epochs": 4,
                        "batch_size": 8,
                    },
                )
                break
            except ApiError as exc:
                if not exc.type.endswith("/unknown-dataset-version") or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        kiln.training.wait(job["id"], timeout_s=300)
        deadline = time.monotonic() + 60
        while not (versions := kiln.registry.versions(model)):
            assert time.monotonic() < deadline, "the trained model never reached the registry"
            time.sleep(0.3)
        version = versions[0]["version"]
        kiln.registry.promote(model, version, "production", "client tests")
        kiln.serving.create_endpoint(model, model, "production", sample_rate=1.0)
        deadline = time.monotonic() + 180
        while (kiln.serving.endpoint(model).get("stable") or {}).get("version") != version:
            assert time.monotonic() < deadline, kiln.serving.endpoint(model)
            time.sleep(0.5)
    return ServedModel(ds["id"], model, model, version, images)
