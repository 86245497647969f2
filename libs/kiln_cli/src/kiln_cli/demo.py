"""``kiln demo``: the whole loop on real data, through the public APIs only.

data → labels → model → serving → flagged predictions → labels → a better model, on
scikit-learn's handwritten digits (1,797 8×8 images, read from the file that ships inside the
scikit-learn wheel):

1. the images are uploaded into a dataset version (held-out digits stay out);
2. the version's event makes annotation tasks; scripted annotators label them through the same
   API a person uses, from the ground truth with deliberate mistakes that a scripted reviewer
   catches and sends back;
3. the labelled version triggers a training job; the registry records the model and it is
   promoted through a metric gate;
4. serving loads it into Triton; held-out digits are predicted through ``:predict``;
5. production traffic with low confidence is flagged; those inputs become urgent annotation
   tasks, are labelled, retraining runs, and the new model rolls out as a canary that the
   endpoint's analysis promotes.

On the embedded defaults every service runs in this process (SQLite, a local directory store,
the embedded bus, in-process job threads and a managed local Triton); with
``--stack local`` the same script drives the services started by ``kiln stack up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import importlib.util
import io
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import typer

from kiln_cli.console import DIST, ConsoleApp
from kiln_cli.gateway import Gateway
from kiln_cli.services import DEFAULT_PORTS, load_spec
from kiln_client import ApiError, AsyncKiln, ClientSettings
from kiln_client.types import DatasetVersion, ModelVersion
from kiln_core.auth import ROLES, issue_token
from kiln_core.events import SERVICES
from kiln_core.http import create_app
from kiln_core.metrics import EVENTS_PUBLISHED
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings, get_settings, state_dir

T = TypeVar("T")

DIGITS = [str(d) for d in range(10)]
GATEWAY_PORT = 8100  # `kiln up` puts the gateway here
# The team the demo's people belong to and its datasets, models and endpoints belong to.
DEMO_TEAM = "vision"


# --- the data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digit:
    name: str
    png: bytes
    label: str


def load_digits() -> list[Digit]:
    """The 1,797 digits as 8×8 grey PNGs with their true labels (file order)."""
    from PIL import Image

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise typer.BadParameter("scikit-learn is not installed (it ships the digits)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",")
    digits = []
    for index, row in enumerate(table):
        pixels = np.clip(row[:64].reshape(8, 8) * 16, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        digits.append(Digit(f"digit-{index:04}.png", buffer.getvalue(), str(int(row[64]))))
    return digits


@dataclass
class Split:
    train: list[Digit]
    val: list[Digit]
    traffic: list[Digit]  # production traffic after round one (some of it gets flagged)
    test: list[Digit]  # held out from everything; served accuracy is measured on it


def split_digits(digits: list[Digit], seed: int) -> Split:
    shuffled = list(digits)
    random.Random(seed).shuffle(shuffled)
    return Split(
        train=shuffled[:900],
        val=shuffled[900:1150],
        traffic=shuffled[1150:1500],
        test=shuffled[1500:],
    )


# --- talking to the services ---------------------------------------------------------------------


class Kiln:
    """The demo's people, each a :class:`kiln_client.AsyncKiln` with their own token over one
    shared connection pool."""

    def __init__(self, client: AsyncKiln, settings: Any) -> None:
        self.client = client
        self.settings = settings
        self.people: dict[tuple[str, ...], AsyncKiln] = {}
        self.admin = self.person("demo", "admin")

    def person(self, who: str, *roles: str) -> AsyncKiln:
        key = (who, *roles)
        if key not in self.people:
            # The demo's people are members of its team; its admin is the platform's.
            teams = None if "admin" in roles else {DEMO_TEAM: "member"}
            self.people[key] = self.client.with_token(
                issue_token(who, list(roles), self.settings, teams=teams)
            )
        return self.people[key]

    @property
    def requests(self) -> int:
        return self.client.transport.requests

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        who: tuple[str, ...] = ("demo", "admin"),
        expect: tuple[int, ...] = (200, 201, 202, 204),
        content_type: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A raw call through kiln_client's one HTTP path, for the detection demo's steps that
        have no typed call yet; an answer outside ``expect`` fails the demo."""
        headers = {"content-type": content_type} if content_type else None
        transport = self.person(*who).transport
        try:
            response = await transport.request(
                service,
                method,
                path,
                ok=tuple(c for c in expect if c >= 300),
                headers=headers,
                **kwargs,
            )
        except ApiError as exc:
            raise DemoFailed(f"{service} {method} {path} answered {exc}") from None
        if response.status_code not in expect:
            raise DemoFailed(f"{service} {method} {path} answered {response.status_code}")
        return response

    async def json(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.call(service, method, path, **kwargs)).json()


class DemoFailed(RuntimeError):
    pass


async def wait_for(
    what: str, probe: Callable[[], Awaitable[T | None]], timeout_s: float, every_s: float = 0.2
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(every_s)


def dev_tokens(settings: Any, teams: list[str] | None = None) -> Callable[[], dict[str, str]]:
    """A development token per role, for the embedded console's role picker, each a member
    of ``teams`` (the default team when not named)."""
    members = teams or [settings.default_team]

    def tokens() -> dict[str, str]:
        return {role: issue_token(f"dev-{role}", [role], settings, teams=members) for role in ROLES}

    return tokens


@asynccontextmanager
async def serving_console(
    gateway: Gateway, host: str, port: int
) -> AsyncIterator[asyncio.Task[None]]:
    """The gateway (APIs and the web console) on ``host:port`` while the context is open; the
    task ends when the server stops (Ctrl-C)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # Ctrl-C is the caller's (until_stopped), so the services shut down in order

    config = uvicorn.Config(
        gateway, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # the port is taken, or the like: say why
            raise DemoFailed(f"the console server did not start on {host}:{port}")
        await asyncio.sleep(0.05)
    try:
        yield task
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)


async def until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@asynccontextmanager
async def embedded_services(
    out_dir: Path,
    *,
    serve: tuple[str, int] | None = None,
    settings: Any = None,
    console_team: str | None = None,
) -> AsyncIterator[tuple[AsyncKiln, Any]]:
    """Every service in this process, each with its API (lifespan included) and event loop;
    with ``serve=(host, port)`` also the gateway and the web console on that address, whose
    development sign-in puts everyone in ``console_team`` (the default team when not named);
    on the embedded defaults, or on ``settings`` (tests point them at the real stack)."""

    settings = settings or Settings(
        database_url=f"sqlite+aiosqlite:///{out_dir}/data/{{service}}.db",
        storage_url=f"file://{out_dir}/store",
        bus_url="embedded://demo",
        celery_broker_url="memory://",
        triton_url="managed://",
    )
    async with AsyncExitStack() as stack:
        apps = {}
        for name in SERVICES:
            runtime = ServiceRuntime(load_spec(name), settings)
            app = create_app(runtime, background=[runtime.run_events])
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[name] = app
        # One ASGI app mounts every service, as the gateway does on a real deployment.
        if serve is None:
            gateway = Gateway(apps)
        else:
            gateway = Gateway(
                apps,
                console=ConsoleApp(DIST),
                dev_tokens=dev_tokens(settings, [console_team or settings.default_team]),
            )
            await stack.enter_async_context(serving_console(gateway, *serve))
        client = AsyncKiln(
            settings=ClientSettings(url="http://kiln", timeout_s=120),
            transport=httpx.ASGITransport(app=gateway),
        )
        yield await stack.enter_async_context(client), settings


@asynccontextmanager
async def stack_services() -> AsyncIterator[tuple[AsyncKiln, Any]]:
    """The services of the local stack (``kiln up``) over HTTP, through its gateway."""
    settings = ClientSettings(url=f"http://127.0.0.1:{GATEWAY_PORT}", timeout_s=120)
    async with AsyncKiln(settings=settings) as client:
        yield client, get_settings()


# --- the loop ------------------------------------------------------------------------------------


@dataclass
class Round:
    name: str
    model_version: int = 0
    val_accuracy: float | None = None
    served_accuracy: float | None = None
    flagged: int = 0
    labelled: int = 0
    corrected: int = 0
    seconds: float = 0.0


@dataclass
class Loop:
    kiln: Kiln
    data: Split
    seed: int
    mistake_rate: float
    threshold: float
    say: Callable[[str], None]
    rounds: list[Round] = field(default_factory=list)
    dataset_id: str = ""
    project_id: str = ""
    truth: dict[str, str] = field(default_factory=dict)  # blob sha256 → true label
    # Names of this run's model and endpoint: a long-lived stack keeps earlier runs' ones.
    run: str = field(default_factory=lambda: os.urandom(3).hex())

    @property
    def model(self) -> str:
        return f"digits-{self.run}"

    @property
    def endpoint(self) -> str:
        return f"digits-{self.run}"

    def __post_init__(self) -> None:
        import hashlib

        every = self.data.train + self.data.val + self.data.traffic + self.data.test
        self.truth = {hashlib.sha256(d.png).hexdigest(): d.label for d in every}

    async def setup(self) -> None:
        k = self.kiln.admin
        dataset = await k.datasets.create(
            f"digits-{self.seed}-{int(time.time())}",
            "classification",
            "scikit-learn handwritten digits, 8×8 grey",
            team=DEMO_TEAM,
        )
        self.dataset_id = dataset["id"]
        project = await k.annotation.create_project(
            f"label-{self.dataset_id}",
            self.dataset_id,
            DIGITS,
            batch_size=50,
            review_levels=1,
            team=DEMO_TEAM,
        )
        self.project_id = project["id"]
        await k.training.ensure_team(DEMO_TEAM)
        await k.training.create_trigger(
            f"retrain-{self.model}",
            self.dataset_id,
            {
                "template": "image-cnn",
                "team": DEMO_TEAM,
                "model_name": self.model,
                "seed": self.seed,
                "params": {
                    "image_size": 8,
                    "image_mode": "L",
                    "width": 16,
                    "epochs": 20,
                    "batch_size": 64,
                    "lr": 0.01,
                },
            },
        )
        await k.registry.create_model(self.model, team=DEMO_TEAM)
        await k.registry.set_policy(
            self.model,
            gated_aliases=["production", "canary"],
            metric_gates=[{"metric": "accuracy", "op": ">=", "value": 0.9}],
            regression_gates=[{"metric": "accuracy", "max_drop": 0.02}],
            promoter_roles=["ml-engineer"],
            # Continuous delivery: a trained version that passes the gates goes live.
            auto_promote="production",
        )
        await k.serving.create_endpoint(
            self.endpoint,
            self.model,
            "production",
            team=DEMO_TEAM,
            candidate_alias="canary",
            strategy="canary",
            canary_steps=[50, 100],
            step_interval_s=1.0,
            min_requests_per_step=20,
            # Client, five services and Triton share this machine's cores in the demo, so
            # latency is noisy; errors decide here, latency only when it is extreme.
            max_latency_ratio=25.0,
            confidence_threshold=self.threshold,
            sample_rate=0.1,
        )
        # Evaluation traffic goes to an endpoint of its own: it follows production but flags
        # nothing, so held-out digits never leak into the labelling queue.
        await k.serving.create_endpoint(
            f"{self.endpoint}-eval", self.model, "production", team=DEMO_TEAM
        )

    async def set_auto_promote(self, alias: str) -> None:
        registry = self.kiln.admin.registry
        policy = await registry.policy(self.model)
        body = {k: policy[k] for k in ("gated_aliases", "metric_gates", "regression_gates")}
        body |= {"promoter_roles": policy["promoter_roles"], "auto_promote": alias}
        await registry.set_policy(self.model, **body)

    async def alias(self, alias: str) -> int | None:
        return (await self.kiln.admin.registry.aliases(self.model)).get(alias)

    async def ingest(self) -> int:
        """Upload the train and val images into a draft and commit it: version 1."""
        datasets = self.kiln.admin.datasets
        draft = await datasets.open_draft(self.dataset_id)
        for split, digits in (("train", self.data.train), ("val", self.data.val)):
            _sent, _skipped, rejected = await datasets.add_files(
                self.dataset_id,
                draft,
                [(d.name, d.png) for d in digits],
                split=split,  # type: ignore[arg-type]
                progress=False,
            )
            if rejected:
                raise DemoFailed(f"upload rejected files: {rejected[:3]}")
        version = await datasets.commit(self.dataset_id, draft, "digits, first batch")
        return int(version["version"])

    async def label(self, expected_tasks: int) -> tuple[int, int]:
        """Scripted annotators work the queue; a reviewer checks against the truth and sends
        wrong labels back. Returns (items labelled, items corrected after review)."""
        pid = self.project_id
        admin = self.kiln.admin.annotation

        async def queued() -> int | None:
            counts = (await admin.project(pid))["task_counts"]
            return counts.get("queued", 0) if counts.get("queued", 0) >= expected_tasks else None

        await wait_for("annotation tasks", queued, timeout_s=60)
        rng = random.Random(self.seed)
        labelled = corrected = 0
        done = asyncio.Event()

        async def annotator(name: str) -> None:
            nonlocal labelled
            me = self.kiln.person(name, "annotator").annotation
            while not done.is_set():
                task = await me.lease(pid)
                if task is None:
                    await asyncio.sleep(0.05)
                    continue
                labels = {}
                rework = task["status"] == "rework"
                for item in task["items"]:
                    truth = self.truth[item["blob"]]
                    # First passes contain mistakes; reworked tasks are fixed.
                    if not rework and rng.random() < self.mistake_rate:
                        truth = rng.choice([d for d in DIGITS if d != truth])
                    labels[item["item_id"]] = [{"type": "class", "label": truth}]
                await me.submit(task["id"], labels)
                labelled += 0 if rework else len(labels)

        async def reviewer() -> None:
            nonlocal corrected
            rita = self.kiln.person("rita", "reviewer").annotation
            while not done.is_set():
                in_review = await rita.tasks(pid, status="in_review", limit=50)
                for task in in_review:
                    blobs = {i["item_id"]: i["blob"] for i in task["items"]}
                    wrong = [
                        item
                        for item, given in (task["labels"] or {}).items()
                        if given[0]["label"] != self.truth[blobs[item]]
                    ]
                    await rita.review(
                        task["id"],
                        accept=not wrong,
                        comment=f"{len(wrong)} wrong: {', '.join(wrong[:3])}" if wrong else "",
                    )
                    corrected += len(wrong)
                if not in_review:
                    counts = (await admin.project(pid))["task_counts"]
                    if set(counts) <= {"committed"}:
                        done.set()
                    await asyncio.sleep(0.05)

        await asyncio.gather(annotator("ann-1"), annotator("ann-2"), annotator("ann-3"), reviewer())
        return labelled, corrected

    async def newest_version(self, source: str, after: int, what: str) -> DatasetVersion:
        """The newest dataset version after ``after`` whose lineage source is ``source``."""

        async def find() -> DatasetVersion | None:
            versions = await self.kiln.admin.datasets.versions(self.dataset_id)
            found = [
                v for v in versions if v["version"] > after and v["lineage"]["source"] == source
            ]
            return max(found, key=lambda v: v["version"]) if found else None

        return await wait_for(what, find, timeout_s=60)

    async def active_learning_version(self, after: int) -> int:
        """The version the flagged inputs joined (the dataset gathers a burst into one)."""
        found = await self.newest_version(
            "active-learning", after, "flagged inputs to join the dataset"
        )
        return int(found["version"])

    async def canary_traffic(self, version: int, digits: list[Digit]) -> dict[int, int]:
        """Production traffic while the canary steps up, until the endpoint's analysis
        promotes it (or rolls it back, which fails the demo)."""
        answered: Counter[int] = Counter()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for p in await self.predict(digits[:64]):
                answered[p["version"]] += 1
            endpoint = await self.kiln.admin.serving.endpoint(self.endpoint)
            stable = (endpoint.get("stable") or {}).get("version")
            if stable == version and not endpoint.get("candidate"):
                return dict(answered)
            mine = [d for d in endpoint.get("deployments", []) if d["version"] == version]
            if mine and (
                mine[0]["state"] == "failed" or mine[0]["reason"].startswith("rolled back")
            ):
                raise DemoFailed(
                    f"the canary of v{version} ended {mine[0]['state']}: {mine[0]['reason']}"
                )
        raise DemoFailed(f"the canary of v{version} did not finish in 90s")

    async def labelled_version(self, after: int) -> DatasetVersion:
        return await self.newest_version("labels", after, "the labelled version")

    async def trained_model(self, after: int, timeout_s: float) -> ModelVersion:
        """The registered model version the trigger's training job produced."""

        async def find() -> ModelVersion | None:
            versions = await self.kiln.admin.registry.versions(self.model)
            found = [v for v in versions if v["version"] > after]
            return max(found, key=lambda v: v["version"]) if found else None

        return await wait_for("the trained model version", find, timeout_s=timeout_s, every_s=0.5)

    async def promote(self, version: int, alias: str) -> None:
        mia = self.kiln.person("mia", "ml-engineer")
        await mia.registry.promote(self.model, version, alias, reason=f"demo: {alias}")

    async def serving_version(
        self, version: int, timeout_s: float, endpoint_name: str = ""
    ) -> None:
        endpoint_name = endpoint_name or self.endpoint

        async def stable() -> bool:
            endpoint = await self.kiln.admin.serving.endpoint(endpoint_name)
            stable = endpoint.get("stable") or {}
            return bool(stable.get("version") == version and not endpoint.get("candidate"))

        await wait_for(f"{endpoint_name} to serve version {version}", stable, timeout_s=timeout_s)

    async def predict(self, digits: list[Digit], route_key: str = "") -> list[dict[str, Any]]:
        """Predictions one request per image (as clients send them), in small batches."""
        out: list[dict[str, Any]] = []
        app = self.kiln.person("app", "viewer").serving
        for start in range(0, len(digits), 16):
            batch = digits[start : start + 16]
            answers = await asyncio.gather(
                *(app.predict(self.endpoint, d.png, route_key=route_key or None) for d in batch)
            )
            out += [
                {"truth": d.label, **a["predictions"][0], "version": a["version"]}
                for d, a in zip(batch, answers, strict=True)
            ]
        return out

    async def predict_b64(self, digits: list[Digit]) -> list[dict[str, Any]]:
        """The held-out set in JSON batches of base64 images."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(digits), 32):
            batch = digits[start : start + 32]
            app = self.kiln.person("app", "viewer").serving
            answer = await app.predict_many(f"{self.endpoint}-eval", [d.png for d in batch])
            out += [
                {"truth": d.label, **p, "version": answer["version"]}
                for d, p in zip(batch, answer["predictions"], strict=True)
            ]
        return out


def accuracy(predictions: list[dict[str, Any]]) -> float:
    return sum(p["label"] == p["truth"] for p in predictions) / max(1, len(predictions))


async def run_loop(
    kiln: Kiln, *, seed: int, mistake_rate: float, threshold: float, say: Callable[[str], None]
) -> dict[str, Any]:
    started = time.monotonic()
    digits = load_digits()
    data = split_digits(digits, seed)
    loop = Loop(kiln, data, seed, mistake_rate, threshold, say)
    say(
        f"digits: {len(digits)} images — {len(data.train)} train, {len(data.val)} val, "
        f"{len(data.traffic)} production traffic, {len(data.test)} held out"
    )
    await loop.setup()

    # round one
    one = Round("round 1")
    t0 = time.monotonic()
    v1 = await loop.ingest()
    say(f"[1/5] ingested {len(data.train) + len(data.val)} images as dataset version {v1}")
    tasks = (len(data.train) + len(data.val) + 49) // 50
    one.labelled, one.corrected = await loop.label(tasks)
    labelled = await loop.labelled_version(v1)
    say(
        f"[2/5] labelled {one.labelled} items in {tasks} tasks; review sent back "
        f"{one.corrected} wrong labels; labelled version {labelled['version']}"
    )
    model = await loop.trained_model(0, timeout_s=120)
    one.model_version = model["version"]
    one.val_accuracy = model["metrics"].get("accuracy")

    async def in_production() -> bool:
        return await loop.alias("production") == model["version"]

    await wait_for("the gate to promote the first model", in_production, timeout_s=30)
    say(
        f"[3/5] trained and registered digits v{model['version']} "
        f"(val accuracy {one.val_accuracy:.3f}); promoted to production through the accuracy gate"
    )
    await loop.serving_version(model["version"], timeout_s=60)
    await loop.serving_version(
        model["version"], timeout_s=60, endpoint_name=f"{loop.endpoint}-eval"
    )
    served = await loop.predict_b64(data.test)
    one.served_accuracy = accuracy(served)
    say(
        f"[4/5] serving v{model['version']} on Triton: {len(served)} held-out digits, "
        f"accuracy {one.served_accuracy:.3f}"
    )
    one.seconds = time.monotonic() - t0
    loop.rounds.append(one)

    # round two: production traffic → flagged inputs → labels → retraining → canary
    two = Round("round 2")
    t0 = time.monotonic()
    traffic = await loop.predict(data.traffic)
    two.flagged = sum(p["confidence"] < threshold for p in traffic)
    say(
        f"[5/5] {len(traffic)} production predictions, {two.flagged} under confidence "
        f"{threshold} flagged for labelling"
    )
    if two.flagged:
        await loop.set_auto_promote("canary")  # from now on new models roll out gradually
        flagged_version = await loop.active_learning_version(labelled["version"])
        two.labelled, two.corrected = await loop.label(expected_tasks=1)
        labelled2 = await loop.labelled_version(flagged_version)
        say(
            f"      flagged inputs became version {flagged_version}, were labelled "
            f"(review caught {two.corrected}) → labelled version {labelled2['version']}"
        )
        model2 = await loop.trained_model(model["version"], timeout_s=120)
        two.model_version = model2["version"]
        two.val_accuracy = model2["metrics"].get("accuracy")
        say(
            f"      retrained digits v{model2['version']} (val accuracy "
            f"{two.val_accuracy:.3f}); the gate let it out as a canary"
        )
        answered = await loop.canary_traffic(model2["version"], data.traffic)
        say(
            f"      canary analysis promoted v{model2['version']} after "
            f"{answered.get(model2['version'], 0)} of {sum(answered.values())} requests"
        )
        await loop.promote(model2["version"], "production")
        await loop.serving_version(
            model2["version"], timeout_s=60, endpoint_name=f"{loop.endpoint}-eval"
        )
    served2 = await loop.predict_b64(data.test)
    two.served_accuracy = accuracy(served2)
    two.seconds = time.monotonic() - t0
    loop.rounds.append(two)
    return {
        "rounds": loop.rounds,
        "served_accuracy": one.served_accuracy,
        "round2_accuracy": two.served_accuracy,
        "seconds": time.monotonic() - started,
        "dataset_id": loop.dataset_id,
    }


# --- the command ---------------------------------------------------------------------------------


async def count_events(stack: str) -> int:
    """Events the services published: this process's counter on the embedded defaults, each
    API's ``/metrics`` on the local stack (the gateway does not expose them)."""
    if stack == "embedded":
        return int(
            sum(
                s.value
                for metric in EVENTS_PUBLISHED.collect()
                for s in metric.samples
                if s.name.endswith("_total")
            )
        )

    total = 0.0
    async with httpx.AsyncClient(timeout=10) as client:
        for port in DEFAULT_PORTS.values():
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            for line in text.splitlines():
                if line.startswith("kiln_events_published_total{"):
                    total += float(line.rsplit(" ", 1)[1])
    return int(total)


def trace_coverage(path: Path) -> dict[str, Any]:
    """The trace that reaches the most services, and which ones it reaches."""
    by_trace: dict[str, set[str]] = {}
    spans: Counter[str] = Counter()
    if not path.exists():
        return {"trace_id": None, "services": [], "spans": 0}
    for line in path.read_text().splitlines():
        span = json.loads(line)
        attributes = span.get("attributes") or {}
        service = attributes.get("kiln.service") or attributes.get("kiln.consumer")
        spans[span["trace_id"]] += 1
        if isinstance(service, str):
            by_trace.setdefault(span["trace_id"], set()).add(service.split(".")[0])
    if not by_trace:
        return {"trace_id": None, "services": [], "spans": 0}
    best = max(by_trace, key=lambda t: (len(by_trace[t]), spans[t]))
    return {"trace_id": best, "services": sorted(by_trace[best]), "spans": spans[best]}


def summary_table(
    rounds: Sequence[Any],
    metric: str = "acc",
    val: str = "val_accuracy",
    served: str = "served_accuracy",
) -> str:
    """The rounds as a table; ``metric`` names the columns of the ``val`` and ``served``
    attributes (the detection demo's rounds carry mAP@.5 instead of accuracy)."""
    vw, sw = max(len(f"val {metric}"), 8), max(len(f"served {metric}"), 8)
    header = f"{'round':<8} {'model':>5} {'val ' + metric:>{vw}} {'served ' + metric:>{sw}} "
    header += f"{'flagged':>7} {'labelled':>8} {'corrected':>9} {'seconds':>7}"
    lines = [header, "-" * len(header)]
    for r in rounds:
        v, s = getattr(r, val), getattr(r, served)
        lines.append(
            f"{r.name:<8} {('v' + str(r.model_version)) if r.model_version else '-':>5} "
            f"{f'{v:.3f}' if v is not None else '-':>{vw}} "
            f"{f'{s:.3f}' if s is not None else '-':>{sw}} {r.flagged:>7} {r.labelled:>8} "
            f"{r.corrected:>9} {r.seconds:>7.1f}"
        )
    return "\n".join(lines)


async def run_demo(
    out_dir: Path,
    *,
    stack: str = "embedded",
    seed: int = 7,
    mistake_rate: float = 0.04,
    threshold: float = 0.9,
    serve: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Run the loop; returns the figures of the last line. With ``serve=(host, port)`` the
    gateway and the web console listen there, and after the loop everything stays up with the
    demo's data until Ctrl-C."""
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs

    def say(message: str) -> None:
        typer.echo(f"{time.monotonic() - started:6.1f}s  {message}")

    services = (
        embedded_services(out_dir, serve=serve, console_team=DEMO_TEAM)
        if stack == "embedded"
        else stack_services()
    )
    say(f"starting Kiln ({stack}); output in {out_dir}")
    async with services as (client, settings):
        kiln = Kiln(client, settings)
        say("five services up: " + ", ".join(SERVICES))
        result = await run_loop(
            kiln, seed=seed, mistake_rate=mistake_rate, threshold=threshold, say=say
        )
        events = await count_events(stack)
        if serve is not None:
            figures = report(out_dir, result, events, kiln.requests, started, stack)
            url = f"http://{serve[0]}:{serve[1]}/"
            say(f"the console is at {url} with the demo's data; Ctrl-C stops")
            await until_stopped()
            return figures
    return report(out_dir, result, events, kiln.requests, started, stack)


def report(
    out_dir: Path,
    result: dict[str, Any],
    events: int,
    requests: int,
    started: float,
    stack: str,
) -> dict[str, Any]:
    """Print the summary table and write summary.json; returns the figures of the last line."""
    rounds: list[Round] = result["rounds"]
    coverage = trace_coverage(out_dir / "traces.jsonl")
    typer.echo("")
    typer.echo(summary_table(rounds))
    typer.echo("")
    typer.echo(
        f"events exchanged: {events}; API requests: {requests}; "
        f"longest trace {coverage['trace_id']} spans {', '.join(coverage['services'])}"
    )
    figures = {
        "served_accuracy": round(result["served_accuracy"], 4),
        "round2_accuracy": round(result["round2_accuracy"], 4),
        "rounds": len(rounds),
        "events": events,
        "seconds": round(time.monotonic() - started, 1),
        "trace_services": coverage["services"],
        "trace_file": str(out_dir / "traces.jsonl"),
        "stack": stack,
    }
    (out_dir / "summary.json").write_text(json.dumps(figures, indent=2))
    return figures


def default_out_dir() -> Path:

    return state_dir() / "demo" / time.strftime("%Y%m%d-%H%M%S")


def with_out_env(out_dir: Path) -> None:
    """Traces of this process go to the demo's output directory; torch's deprecation notices
    (TorchScript still loads fine) stay out of the progress."""
    os.environ["KILN_TRACE_EXPORTER"] = f"file:{out_dir / 'traces.jsonl'}"
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)


__all__ = ["run_demo", "default_out_dir", "with_out_env", "DemoFailed"]
