"""Soak: mixed load on the local stack for a bounded time; errors, latencies and memory.

Starts the local stack as ``kiln up`` does — every service's API, event and Celery worker
processes plus the gateway, as real processes — on the shared infrastructure of ``kiln infra
up``, but with its own ports (free ones, picked at start), PostgreSQL schemas, Kafka namespace,
MinIO bucket and Redis database, so it runs beside other stacks and leaves nothing behind.

Through the gateway it then drives, concurrently and for ``--duration`` seconds:

* uploads: a draft of small unlabelled PNGs, committed as a new dataset version;
* annotation: annotators lease the tasks those versions create and submit labels; once every
  task of a version is in, annotation commits the labels and the dataset makes a labelled
  version (checked at the end: every upload version must have reached its labelled version);
* training: small jobs (image-cnn, one epoch, 16×16) submitted one after another and followed
  until they finish — a failed job is an error;
* predictions: steady ``:predict`` calls against an endpoint serving a model imported into the
  registry and promoted to production (loaded into the shared Triton).

Before the clock starts, every kind of operation completes once (warm-up), so lazy imports,
PyTorch's first use and connection pools are not counted as growth. Every process's memory is
sampled throughout from ``/proc``: the proportional set size (PSS) of the process and all its
children, so a forked child (the registry's model checks fork from a server that holds PyTorch)
is not counted twice for the pages it shares.

Memory criterion (levelling off): the measured window is cut in thirds by time. A process has
levelled off when, with ``allowed = max(5 % of its earlier peak, 24 MiB)``,

* its peak in the last third is at most its peak in the first two thirds + allowed, and
* its median in the last third is at most its median in the middle third + allowed.

A leak raises both the level and the peaks of the last third; a process that merely breathes
with its load (a training run now and then, a batch of uploads) has its peaks somewhere in the
first two thirds too, and its median stays. The least-squares slope over the second half is
reported beside it (MiB/min) for the reader, not judged.

Prints progress on stderr, one JSON object on the last line of stdout.

    .venv/bin/python bench/soak.py [--duration 600] [--predict-concurrency 4] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from kiln_client import AsyncKiln, ClientSettings, KilnClientError
from kiln_client.datasets import Split
from kiln_client.types import DatasetVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kiln_core.events import SERVICES  # noqa: E402

MIB = 1024 * 1024
LEVEL_FRACTION = 0.05
LEVEL_FLOOR_MIB = 24.0
CLASSES = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
FEATURES = 4
T = TypeVar("T")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the stack -----------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Stack:
    """The soak's own local stack: processes, ports and the names of what it creates."""

    run: str
    redis_db: int
    log_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    gateway_port: int = 0
    procs: list[Proc] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"soak{self.run}_"

    @property
    def namespace(self) -> str:
        return f"soak{self.run}"

    @property
    def bucket(self) -> str:
        return f"soak{self.run}"

    def env(self) -> dict[str, str]:
        from kiln_cli.infra import local_stack_env

        base = local_stack_env()
        redis = base["KILN_REDIS_URL"].rsplit("/", 1)[0] + f"/{self.redis_db}"
        return {
            **os.environ,
            **base,
            "KILN_DB_SCHEMA_PREFIX": self.prefix,
            "KILN_BUS_URL": f"{base['KILN_BUS_URL']}?namespace={self.namespace}",
            "KILN_STORAGE_URL": base["KILN_STORAGE_URL"].replace("/kiln?", f"/{self.bucket}?"),
            "KILN_CELERY_BROKER_URL": redis,
            "KILN_REDIS_URL": redis,
            "KILN_SERVING_URL": f"http://127.0.0.1:{self.ports['serving']}",
            "KILN_AUTH_REQUIRED": "true",
            "KILN_LOG_LEVEL": "WARNING",
            "PYTHONWARNINGS": "ignore::FutureWarning",
        }

    def commands(self) -> list[tuple[str, list[str]]]:
        """What ``kiln up`` starts, with this stack's ports."""
        from kiln_cli.stack import service_processes

        return service_processes(self.ports)

    def start(self) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        self.gateway_port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.env()
        for name, args in self.commands():
            self._spawn(name, [sys.executable, "-m", "kiln_cli.main", *args], env)
        targets = {n: f"http://127.0.0.1:{p}" for n, p in self.ports.items()}
        gateway = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-gateway",
            json.dumps(targets),
            "--port",
            str(self.gateway_port),
        ]
        self._spawn("gateway", gateway, env)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        path = self.log_dir / f"{name}.log"
        with path.open("ab") as out:
            popen = subprocess.Popen(
                argv, env=env, stdout=out, stderr=out, start_new_session=True, cwd=REPO
            )
        self.procs.append(Proc(name, popen, path))

    async def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        urls = [f"http://127.0.0.1:{p}/readyz" for p in self.ports.values()]
        urls.append(f"http://127.0.0.1:{self.gateway_port}/healthz")
        async with httpx.AsyncClient(timeout=2) as client:
            for url in urls:
                while True:
                    self.check_alive()
                    try:
                        if (await client.get(url)).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise SoakFailed(f"{url} not ready within {timeout_s:.0f}s")
                    await asyncio.sleep(0.3)

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                raise SoakFailed(
                    f"{proc.name} exited with {proc.popen.returncode}; see {proc.log_path}"
                )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(5)

    async def clean_up(self) -> None:
        """Unload this stack's Triton models, drop its schemas, topics, bucket and Redis db."""
        from kiln_cli.infra import local_stack_env

        env = local_stack_env()
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("triton models", lambda: _unload_models(env, self.prefix)),
            ("schemas", lambda: _drop_schemas(env, self.prefix)),
            ("topics", lambda: _drop_topics(env, self.namespace)),
            ("bucket", lambda: asyncio.to_thread(_drop_bucket, env, self.bucket)),
            ("redis", lambda: asyncio.to_thread(_flush_redis, env, self.redis_db)),
        ]
        for what, step in steps:
            try:
                await step()
            except Exception as exc:  # noqa: BLE001 - tidying only; report and go on
                log(f"clean-up of {what} failed: {exc!r}")


async def _unload_models(env: dict[str, str], prefix: str) -> None:
    import tritonclient.grpc.aio as grpcclient
    from sqlalchemy import text

    from kiln_core.db import Database

    db = Database(env["KILN_DATABASE_URL"], schema="public")
    try:
        async with db.engine.connect() as conn:
            rows = await conn.execute(
                text(f'SELECT triton_model FROM "{prefix}serving".deployments')
            )
            names = [r[0] for r in rows]
    finally:
        await db.dispose()
    client = grpcclient.InferenceServerClient(env["KILN_TRITON_URL"].removeprefix("grpc://"))
    try:
        for name in names:
            try:
                await client.unload_model(name)
            except Exception:  # noqa: BLE001 - already unloaded
                pass
    finally:
        await client.close()


async def _drop_schemas(env: dict[str, str], prefix: str) -> None:
    from sqlalchemy import text

    from kiln_core.db import Database

    db = Database(env["KILN_DATABASE_URL"], schema="public")
    try:
        async with db.engine.begin() as conn:
            for name in SERVICES:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{prefix}{name}" CASCADE'))
    finally:
        await db.dispose()


async def _drop_topics(env: dict[str, str], namespace: str) -> None:
    from urllib.parse import urlsplit

    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=urlsplit(env["KILN_BUS_URL"]).netloc)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(f"{namespace}.")]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


def _drop_bucket(env: dict[str, str], bucket: str) -> None:
    from urllib.parse import urlsplit

    from minio import Minio
    from minio.deleteobjects import DeleteObject

    url = urlsplit(env["KILN_STORAGE_URL"])
    client = Minio(
        f"{url.hostname}:{url.port}",
        access_key=url.username,
        secret_key=url.password,
        secure=False,
    )
    if not client.bucket_exists(bucket):
        return
    objects = (DeleteObject(o.object_name) for o in client.list_objects(bucket, recursive=True))
    for error in client.remove_objects(bucket, objects):
        log(f"could not delete {error}")
    client.remove_bucket(bucket)


def _flush_redis(env: dict[str, str], db: int) -> None:
    import redis

    url = env["KILN_REDIS_URL"].rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


# --- memory --------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        ppid = int(stat.rpartition(")")[2].split()[1])
        tree[ppid].append(int(entry))
    return tree


def _pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages split among their sharers, so a process tree's sum
    counts memory a forked child shares with its parent once (RSS would count it twice)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_pss_mib(pid: int, tree: dict[int, list[int]]) -> float:
    """Memory of a process and all its descendants (PSS, MiB)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += _pss_bytes(current)
        todo.extend(tree.get(current, []))
    return total / MIB


@dataclass
class MemorySeries:
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))

    def sample(self, stack: Stack, t: float) -> None:
        tree = _children()
        for proc in stack.procs:
            self.samples[proc.name].append((t, tree_pss_mib(proc.popen.pid, tree)))
        self.samples["driver"].append((t, tree_pss_mib(os.getpid(), {})))


def levelling(points: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    """First/last/max memory in the window, the thirds' peaks and medians, and the verdict
    (see the module docstring)."""
    window = [(t, m) for t, m in points if start <= t <= end]
    if len(window) < 6:
        return {"samples": len(window), "levelled": False, "reason": "too few samples"}
    third = (end - start) / 3
    earlier = [m for t, m in window if t < start + 2 * third]
    middle = [m for t, m in window if start + third <= t < start + 2 * third]
    last = [m for t, m in window if t >= start + 2 * third]
    reference, last_max = max(earlier), max(last)
    middle_median, last_median = statistics.median(middle), statistics.median(last)
    allowed = max(LEVEL_FRACTION * reference, LEVEL_FLOOR_MIB)
    half = [(t, m) for t, m in window if t >= start + (end - start) / 2]
    ts = np.array([t for t, _ in half])
    ms = np.array([m for _, m in half])
    slope = float(np.polyfit(ts, ms, 1)[0]) * 60 if len(half) > 2 and np.ptp(ts) > 0 else 0.0
    return {
        "samples": len(window),
        "first_mib": round(window[0][1], 1),
        "last_mib": round(window[-1][1], 1),
        "max_mib": round(max(m for _, m in window), 1),
        "earlier_max_mib": round(reference, 1),
        "last_third_max_mib": round(last_max, 1),
        "middle_third_median_mib": round(middle_median, 1),
        "last_third_median_mib": round(last_median, 1),
        "peak_growth_mib": round(last_max - reference, 1),
        "median_growth_mib": round(last_median - middle_median, 1),
        "allowed_mib": round(allowed, 1),
        "slope_mib_per_min": round(slope, 2),
        "levelled": last_max - reference <= allowed and last_median - middle_median <= allowed,
    }


def timeline(points: list[tuple[float, float]], n: int = 12) -> list[float]:
    """``n`` evenly spaced samples of the whole run (warm-up included), for the report."""
    picks = np.linspace(0, len(points) - 1, min(n, len(points))).round().astype(int)
    return [round(points[i][1], 1) for i in picks]


def timeline_times(points: list[tuple[float, float]], n: int = 12) -> list[float]:
    picks = np.linspace(0, len(points) - 1, min(n, len(points))).round().astype(int)
    return [points[i][0] for i in picks]


# --- load ----------------------------------------------------------------------------------------


class SoakFailed(RuntimeError):
    pass


@dataclass
class Recorder:
    """Latency and outcome of every operation; only those inside the window count."""

    durations: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: list[str] = field(default_factory=list)
    counting: bool = False

    def ok(self, op: str, seconds: float) -> None:
        if self.counting:
            self.durations[op].append(seconds)

    def error(self, op: str, detail: str) -> None:
        # Errors count whenever they happen: warm-up failures are failures too.
        self.errors[op] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{op}: {detail[:300]}")
        log(f"ERROR {op}: {detail[:300]}")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for op in sorted(set(self.durations) | set(self.errors)):
            values = sorted(self.durations.get(op, []))
            entry: dict[str, Any] = {"count": len(values), "errors": self.errors.get(op, 0)}
            if values:
                entry["p50_ms"] = round(float(np.percentile(values, 50)) * 1000, 1)
                entry["p99_ms"] = round(float(np.percentile(values, 99)) * 1000, 1)
                entry["max_ms"] = round(values[-1] * 1000, 1)
            out[op] = entry
        return out


class Failed:
    """What :meth:`Client.call` gives for a call that failed (it is recorded)."""


FAILED = Failed()


class Client:
    """kiln_client per acting person over one connection pool; records each call. The
    client makes one attempt per call here: the soak counts what fails, it does not retry."""

    def __init__(self, kiln: AsyncKiln, recorder: Recorder) -> None:
        self.kiln = kiln
        self.recorder = recorder
        self._people: dict[tuple[str, ...], tuple[float, AsyncKiln]] = {}

    def person(self, who: tuple[str, ...]) -> AsyncKiln:
        from kiln_core.auth import issue_token
        from kiln_core.settings import Settings

        cached = self._people.get(who)
        if cached is None or time.monotonic() - cached[0] > 600:
            settings = Settings()
            token = issue_token(who[0], list(who[1:]), settings, teams=[settings.default_team])
            cached = self._people[who] = (time.monotonic(), self.kiln.with_token(token))
        return cached[1]

    async def call(
        self,
        op: str,
        work: Callable[[AsyncKiln], Awaitable[T]],
        *,
        who: tuple[str, ...] = ("soak", "admin"),
    ) -> T | Failed:
        """The call's answer, or FAILED after recording why."""
        started = time.perf_counter()
        try:
            answer = await work(self.person(who))
        except KilnClientError as exc:
            self.recorder.error(op, str(exc)[:300])
            return FAILED
        self.recorder.ok(op, time.perf_counter() - started)
        return answer

    async def must(self, op: str, work: Callable[[AsyncKiln], Awaitable[T]], **kwargs: Any) -> T:
        """Setup calls: a failure ends the soak."""
        answer = await self.call(op, work, **kwargs)
        if isinstance(answer, Failed):
            raise SoakFailed(f"setup step {op} failed: {self.recorder.examples[-1:]}")
        return answer


async def _add_files(
    k: AsyncKiln,
    *,
    dataset: str,
    draft: str,
    files: list[tuple[str, Path | bytes]],
    labels: dict[str, str | list[Any]],
    split: Split,
) -> tuple[int, int, list[dict[str, Any]]]:
    return await k.datasets.add_files(
        dataset, draft, files, labels=labels, split=split, progress=False
    )


async def _versions(k: AsyncKiln, *, dataset: str, offset: int) -> list[DatasetVersion]:
    return await k.datasets.versions(dataset, limit=500, offset=offset)


def png(rng: np.random.Generator, color: tuple[int, int, int], size: int = 16) -> bytes:
    """A colour with per-pixel noise, so every image is a distinct blob."""
    from PIL import Image

    noise = rng.integers(-40, 41, size=(size, size, 3))
    pixels = np.clip(np.array(color)[None, None, :] + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def tabular_model() -> bytes:
    import torch

    torch.manual_seed(0)
    scripted = torch.jit.script(torch.nn.Linear(FEATURES, len(CLASSES)).eval())
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    return buf.getvalue()


@dataclass
class Load:
    """The soak's workload; every loop runs until ``stop`` is set."""

    client: Client
    run: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))
    upload_batch: int = 20
    upload_every_s: float = 3.0
    predict_concurrency: int = 4
    predict_rate: float = 40.0
    annotators: int = 2
    label_dataset: str = ""
    project: str = ""
    train_dataset: str = ""
    train_version: int = 0
    model: str = ""
    endpoint: str = ""
    upload_versions: list[int] = field(default_factory=list)
    items_uploaded: int = 0
    next_item: int = 0
    tasks_submitted: int = 0
    predictions: int = 0
    jobs: dict[str, str] = field(default_factory=dict)  # job id → final status

    @property
    def trained_model(self) -> str:
        return f"soak-{self.run}-cnn"

    async def setup(self) -> None:
        c = self.client
        log("setup: datasets, project, team, registry model, endpoint")
        label = await c.must(
            "setup", lambda k: k.datasets.create(f"soak-{self.run}-label", "classification")
        )
        self.label_dataset = label["id"]
        project = await c.must(
            "setup",
            lambda k: k.annotation.create_project(
                f"soak-{self.run}",
                self.label_dataset,
                list(CLASSES),
                batch_size=10,
                review_levels=0,
            ),
        )
        self.project = project["id"]
        train = await c.must(
            "setup", lambda k: k.datasets.create(f"soak-{self.run}-train", "classification")
        )
        self.train_dataset = train["id"]
        self.train_version = await self._training_version()
        await c.must("setup", lambda k: k.training.ensure_team("soak"))
        await c.must("setup", lambda k: k.registry.create_model(self.trained_model, team="soak"))
        self.model = f"soak-{self.run}-tab"
        self.endpoint = f"soak-{self.run}"
        await c.must("setup", lambda k: k.registry.create_model(self.model))
        meta = {
            "signature": {
                "inputs": [{"name": "features", "dtype": "FP32", "shape": [FEATURES]}],
                "outputs": [{"name": "logits", "dtype": "FP32", "shape": [len(CLASSES)]}],
            },
            "label_map": list(CLASSES),
            "preprocessing": {"kind": "tabular"},
            "metrics": {"accuracy": 0.9},
        }
        model = tabular_model()
        await c.must("setup", lambda k: k.registry.import_model(self.model, model, meta))
        await c.must(
            "setup",
            lambda k: k.serving.create_endpoint(
                self.endpoint, self.model, exist_ok=False, sample_rate=0.05
            ),
        )
        await c.must("setup", lambda k: k.registry.promote(self.model, 1, "production", "soak"))

    async def _training_version(self) -> int:
        """A small labelled image version with train and val splits."""
        c, ds = self.client, self.train_dataset
        draft = await c.must("setup", lambda k: k.datasets.open_draft(ds))
        splits: tuple[tuple[Split, int], ...] = (("train", 12), ("val", 6))
        for split, per_class in splits:
            files: list[tuple[str, Path | bytes]] = []
            labels: dict[str, str | list[Any]] = {}
            for label, color in CLASSES.items():
                for i in range(per_class):
                    name = f"{split}-{label}-{i}.png"
                    files.append((name, png(self.rng, color)))
                    labels[name] = label
            work = functools.partial(
                _add_files, dataset=ds, draft=draft, files=files, labels=labels, split=split
            )
            await c.must("setup", work)
        version = await c.must(
            "setup", lambda k: k.datasets.commit(ds, draft, "soak training data")
        )
        return int(version["version"])

    # --- one operation of each kind

    async def upload_once(self) -> None:
        c, ds = self.client, self.label_dataset
        draft = await c.call("draft", lambda k: k.datasets.open_draft(ds))
        if isinstance(draft, Failed):
            return
        colors = list(CLASSES.values())
        # The file name is the item id: unique across the dataset, so each version is new work.
        first, self.next_item = self.next_item, self.next_item + self.upload_batch
        files: list[tuple[str, Path | bytes]] = [
            (f"i{k:07}.png", png(self.rng, colors[k % 3])) for k in range(first, self.next_item)
        ]
        # Every byte is sent (the images are all new): the op is one multipart upload.
        sent = await c.call(
            "upload",
            lambda k: k.datasets.add_files(ds, draft, files, progress=False, skip_stored=False),
        )
        if isinstance(sent, Failed):
            return
        if sent[2]:
            self.client.recorder.error("upload", f"files rejected: {sent[2][:2]}")
            return
        version = await c.call("commit", lambda k: k.datasets.commit(ds, draft, "soak"))
        if not isinstance(version, Failed):
            self.upload_versions.append(int(version["version"]))
            self.items_uploaded += self.upload_batch

    async def annotate_once(self, name: str) -> bool:
        """Lease and label one task; False when the queue was empty."""
        who = (name, "annotator")
        c = self.client
        task = await c.call("lease", lambda k: k.annotation.lease(self.project), who=who)
        if isinstance(task, Failed) or task is None:
            return False
        labels = {
            item["item_id"]: [{"type": "class", "label": list(CLASSES)[n % 3]}]
            for n, item in enumerate(task.get("items", []))
        }
        submitted = await c.call(
            "submit", lambda k: k.annotation.submit(task["id"], labels), who=who
        )
        if not isinstance(submitted, Failed):
            self.tasks_submitted += 1
        return True

    async def train_once(self, timeout_s: float) -> None:
        """Submit a small job and follow it to the end."""
        c = self.client
        job = await c.call(
            "train_submit",
            lambda k: k.training.submit(
                "image-cnn",
                self.train_dataset,
                team="soak",
                version=self.train_version,
                model_name=self.trained_model,
                params={"image_size": 16, "epochs": 1, "batch_size": 12, "width": 4},
            ),
        )
        if isinstance(job, Failed):
            return
        job_id = job["id"]
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            state = await c.call("train_status", lambda k: k.training.get(job_id))
            if isinstance(state, Failed):
                continue
            status = state.get("status", "")
            if status in ("succeeded", "failed", "cancelled"):
                self.jobs[job_id] = status
                if status == "succeeded":
                    c.recorder.ok("train_job", time.perf_counter() - started)
                else:
                    c.recorder.error("train_job", f"job {job_id} {status}: {state}")
                return
        self.jobs[job_id] = "timeout"
        c.recorder.error("train_job", f"job {job_id} not finished within {timeout_s:.0f}s")

    async def predict_once(self) -> None:
        row = [float(x) for x in self.rng.normal(size=FEATURES)]
        answer = await self.client.call(
            "predict", lambda k: k.serving.predict_many(self.endpoint, [row]), who=("app", "viewer")
        )
        if not isinstance(answer, Failed):
            self.predictions += 1

    # --- the loops

    async def uploads(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            await self.upload_once()
            await self._pause(self.upload_every_s - (time.monotonic() - started))

    async def annotator(self, name: str) -> None:
        while not self.stop.is_set():
            if not await self.annotate_once(name):
                await self._pause(0.3)

    async def trainer(self, every_s: float) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            await self.train_once(timeout_s=300)
            await self._pause(every_s - (time.monotonic() - started))

    async def predictor(self) -> None:
        interval = self.predict_concurrency / self.predict_rate
        while not self.stop.is_set():
            started = time.monotonic()
            await self.predict_once()
            await self._pause(interval - (time.monotonic() - started))

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            try:
                await asyncio.wait_for(self.stop.wait(), seconds)
            except TimeoutError:
                pass

    # --- waiting for the pipeline

    async def serving(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = await self.client.call("setup", lambda k: k.serving.endpoint(self.endpoint))
            if not isinstance(state, Failed) and (state.get("stable") or {}).get("version") == 1:
                return
            await asyncio.sleep(0.5)
        raise SoakFailed(f"endpoint {self.endpoint} not serving within {timeout_s:.0f}s")

    async def labelled_versions(self) -> dict[int, int]:
        """Upload version → the labelled version made from it."""
        out: dict[int, int] = {}
        offset = 0
        while True:
            work = functools.partial(_versions, dataset=self.label_dataset, offset=offset)
            page = await self.client.call("read", work)
            if isinstance(page, Failed):
                return out
            for v in page:
                lineage = v.get("lineage") or {}
                if lineage.get("source") == "labels":
                    out[int(lineage["parent_version"])] = int(v["version"])
            if len(page) < 500:
                return out
            offset += len(page)

    async def registered(self) -> int:
        """Versions the registry holds of the trained model (one per succeeded job)."""
        versions = await self.client.call(
            "read", lambda k: k.registry.versions(self.trained_model, limit=500)
        )
        return 0 if isinstance(versions, Failed) else len(versions)

    async def wait_registered(self, timeout_s: float) -> int:
        """Until every succeeded job's model is a registry version; returns how many are."""
        want = sum(s == "succeeded" for s in self.jobs.values())
        deadline = time.monotonic() + timeout_s
        while True:
            have = await self.registered()
            if have >= want or time.monotonic() > deadline:
                return have
            await asyncio.sleep(0.5)

    async def drain(self, timeout_s: float) -> list[int]:
        """Label what is left; the upload versions still without a labelled version."""
        deadline = time.monotonic() + timeout_s
        missing = list(self.upload_versions)
        while time.monotonic() < deadline:
            busy = await asyncio.gather(
                *(self.annotate_once(f"ann-{i}") for i in range(self.annotators))
            )
            done = await self.labelled_versions()
            missing = [v for v in self.upload_versions if v not in done]
            if not missing:
                return []
            if not any(busy):
                await asyncio.sleep(0.5)
        return missing


async def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    stack = Stack(run, args.redis_db, Path(args.log_dir or (REPO / ".kiln" / "soak" / run)))
    recorder = Recorder()
    memory = MemorySeries()
    t0 = time.monotonic()
    stop_sampling = asyncio.Event()

    async def sampler() -> None:
        while not stop_sampling.is_set():
            memory.sample(stack, time.monotonic() - t0)
            for proc in stack.procs:
                if proc.popen.poll() is not None:
                    recorder.error("process", f"{proc.name} exited ({proc.popen.returncode})")
                    stop_sampling.set()
            try:
                await asyncio.wait_for(stop_sampling.wait(), args.sample_every)
            except TimeoutError:
                pass

    log(f"soak {run}: starting the stack (logs in {stack.log_dir})")
    stack.start()
    sampling = asyncio.create_task(sampler())
    result: dict[str, Any] = {"run": run, "duration_s": args.duration}
    try:
        await stack.wait_ready(args.ready_timeout)
        log(f"stack ready in {time.monotonic() - t0:.1f}s; gateway :{stack.gateway_port}")
        gateway = f"http://127.0.0.1:{stack.gateway_port}"
        async with AsyncKiln(
            settings=ClientSettings(url=gateway, timeout_s=60, attempts=1),
            http=httpx.AsyncClient(
                base_url=gateway,
                timeout=60,
                # Idle connections are dropped before uvicorn's 5 s keep-alive ends: reusing
                # one the server is closing fails with ReadError (a client-side race).
                limits=httpx.Limits(max_connections=32, keepalive_expiry=2.0),
            ),
        ) as kiln:
            load = Load(
                Client(kiln, recorder),
                run,
                upload_batch=args.upload_batch,
                upload_every_s=args.upload_every,
                predict_concurrency=args.predict_concurrency,
                predict_rate=args.predict_rate,
            )
            await load.setup()
            await load.serving(timeout_s=120)
            log("warm-up: one of each operation")
            await load.upload_once()
            await asyncio.gather(
                load.train_once(timeout_s=300),
                *(load.predict_once() for _ in range(20)),
                load.drain(timeout_s=120),
            )
            # The trained model reaches the registry too (its model check starts a fork server
            # holding PyTorch: warm-up, not growth).
            await load.wait_registered(timeout_s=120)
            if recorder.errors:
                raise SoakFailed(f"warm-up failed: {recorder.examples}")
            warm = time.monotonic() - t0
            log(f"warm-up done at {warm:.1f}s; mixed load for {args.duration:.0f}s")
            recorder.counting = True
            start = time.monotonic() - t0
            loops = [
                asyncio.create_task(load.uploads()),
                asyncio.create_task(load.trainer(args.train_every)),
                *(asyncio.create_task(load.annotator(f"ann-{i}")) for i in range(load.annotators)),
                *(asyncio.create_task(load.predictor()) for _ in range(args.predict_concurrency)),
            ]
            progress = asyncio.create_task(_progress(load, recorder, args.duration))
            await asyncio.sleep(args.duration)
            end = time.monotonic() - t0
            load.stop.set()
            progress.cancel()
            await asyncio.gather(*loops)
            recorder.counting = False
            log("load stopped; waiting for the last labels and the last training job")
            missing = await load.drain(timeout_s=120)
            if missing:
                recorder.error(
                    "pipeline", f"upload versions without a labelled version: {missing[:10]}"
                )
            succeeded = sum(s == "succeeded" for s in load.jobs.values())
            registered = await load.wait_registered(timeout_s=60)
            if registered < succeeded:
                recorder.error(
                    "pipeline", f"{succeeded} jobs succeeded, {registered} models registered"
                )
            stop_sampling.set()
            await sampling
            stack.check_alive()
        memory_report = {
            name: {**levelling(points, start, end), "timeline_mib": timeline(points)}
            for name, points in memory.samples.items()
        }
        series = stack.log_dir / "memory.json"
        series.write_text(json.dumps({"window": [start, end], "samples": memory.samples}))
        services = {k: v for k, v in memory_report.items() if k != "driver"}
        operations = recorder.summary()
        requests = sum(o["count"] + o["errors"] for k, o in operations.items() if k != "train_job")
        errors = sum(recorder.errors.values())
        result.update(
            {
                "warmup_s": round(warm, 1),
                "window_s": round(end - start, 1),
                "requests": requests,
                "errors": errors,
                "error_rate": round(errors / max(1, requests), 6),
                "error_examples": recorder.examples,
                "operations": operations,
                "items_uploaded": load.items_uploaded,
                "upload_versions": len(load.upload_versions),
                "labelled_versions": len(load.upload_versions) - len(missing),
                "tasks_submitted": load.tasks_submitted,
                "predictions": load.predictions,
                "training_jobs": len(load.jobs),
                "training_jobs_succeeded": succeeded,
                "model_versions_registered": registered,
                "memory": memory_report,
                "memory_levelled": all(m["levelled"] for m in services.values()),
                "memory_criterion": (
                    "per process (PSS of it and its children), allowed = "
                    f"max({LEVEL_FRACTION:.0%} of the earlier peak, {LEVEL_FLOOR_MIB:.0f} MiB): "
                    "peak of the window's last third <= peak of its first two thirds + allowed, "
                    "and median of the last third <= median of the middle third + allowed"
                ),
                "sample_every_s": args.sample_every,
                "memory_series": str(series),
                "timeline_s": [round(t, 1) for t in timeline_times(memory.samples["driver"])],
                "processes": len(stack.procs),
            }
        )
        return result
    finally:
        stop_sampling.set()
        if not sampling.done():
            sampling.cancel()
        log("stopping the stack")
        stack.stop()
        if not args.keep:
            await stack.clean_up()


async def _progress(load: Load, recorder: Recorder, duration: float) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(max(10.0, duration / 10))
        log(
            f"  {time.monotonic() - started:5.0f}s: {load.items_uploaded} items in "
            f"{len(load.upload_versions)} versions, {load.tasks_submitted} tasks labelled, "
            f"{len(load.jobs)} jobs, {load.predictions} predictions, "
            f"{sum(recorder.errors.values())} errors"
        )


def serve_gateway(targets: str, port: int) -> None:
    """The gateway process of the soak's stack (``kiln gateway`` with these targets)."""
    import uvicorn

    from kiln_cli.gateway import Gateway

    uvicorn.run(
        Gateway(json.loads(targets)),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of mixed load")
    parser.add_argument("--quick", action="store_true", help="a 90 s run (CI, run_all --quick)")
    parser.add_argument("--sample-every", type=float, default=2.0, help="memory sampling, s")
    parser.add_argument("--upload-batch", type=int, default=20, help="images per upload")
    parser.add_argument("--upload-every", type=float, default=3.0, help="s between uploads")
    parser.add_argument("--train-every", type=float, default=20.0, help="s between jobs")
    parser.add_argument("--predict-concurrency", type=int, default=4)
    parser.add_argument("--predict-rate", type=float, default=40.0, help="predictions/s")
    parser.add_argument("--redis-db", type=int, default=13, help="Redis db for Celery")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--log-dir", default="", help="process logs (default .kiln/soak/<run>)")
    parser.add_argument("--keep", action="store_true", help="leave schemas, topics, bucket")
    parser.add_argument("--serve-gateway", default="", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 90.0)
        args.sample_every = min(args.sample_every, 1.0)
    return args


def main() -> None:
    args = parse_args()
    if args.serve_gateway:
        serve_gateway(args.serve_gateway, args.port)
        return
    try:
        result = asyncio.run(run_soak(args))
    except SoakFailed as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        sys.exit(1)
    result["ok"] = result["errors"] == 0 and result["memory_levelled"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
