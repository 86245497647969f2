"""Overload: ramp mixed load on the local stack until the first refusal, past it, then drop it.

Starts the local stack's API processes (``--full``: every process of ``kiln up``) and a gateway
with its per-principal rate limit and in-flight cap, on the shared infrastructure of ``kiln
infra up``, with ports, schemas, Kafka namespace, bucket and Redis database of its own (as
``bench/soak.py`` does, whose stack it reuses). Through the gateway, four principals then offer
a mix: 20 % creates (``POST /datasets``; each ``201`` is an accepted item) and 80 % list reads
spread over the five services' APIs, from a rising number of callers at once, a stage at a
time (each caller sends its next request when the last is answered and honours
``Retry-After`` when shed).

The ramp goes up stage by stage until a stage sees its first answer that is not a 2xx, runs
``--beyond`` stages past it (Kiln must shed, not fail), then drops to the first stage's callers
and times how long until a whole second is again all 2xx with p99 under 250 ms. Finally every
accepted item is read back.

Kiln passes when nothing answers ``500`` (or another 5xx than a shedding ``503``), nothing hangs
past the client's timeout, every ``429``/``503`` carries ``Retry-After``, and every accepted item
is present. Figures: the highest stage rate sustained with every answer 2xx and p99 < 250 ms,
the answer kinds seen above it, items accepted vs present, seconds to recover.

Prints progress on stderr, one JSON object on the last line of stdout.

    .venv/bin/python bench/overload.py [--stages 1,2,4,8,16,32,64,128,256] [--stage-seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.soak import SoakFailed, Stack, free_port, log  # noqa: E402
from kiln_core.events import SERVICES  # noqa: E402

P99_LIMIT_MS = 250.0
PRINCIPALS = 4
READS = [
    ("dataset", "/v1/datasets?limit=20"),
    ("training", "/v1/jobs?limit=20"),
    ("registry", "/v1/models?limit=20"),
    ("serving", "/v1/endpoints"),
    ("annotation", "/v1/projects"),
]


@dataclass
class Answer:
    sent: float
    seconds: float
    kind: str  # "2xx", "429", "503", "500", "timeout", "ConnectError", "503-without-retry-after"
    created: str | None = None
    retry_after_s: float = 0.0


@dataclass
class Stage:
    callers: int
    answers: list[Answer] = field(default_factory=list)

    def summary(self, seconds: float) -> dict[str, Any]:
        ok = [a.seconds for a in self.answers if a.kind == "2xx"]
        return {
            "callers": self.callers,
            "requests_per_s": round(len(self.answers) / seconds, 1),
            "ok_per_s": round(len(ok) / seconds, 1),
            "p99_ms": round(float(np.percentile(ok, 99)) * 1000, 1) if ok else None,
            "kinds": dict(Counter(a.kind for a in self.answers)),
        }

    @property
    def clean(self) -> bool:
        return all(a.kind == "2xx" for a in self.answers)

    def sustained(self) -> bool:
        ok = [a.seconds for a in self.answers if a.kind == "2xx"]
        return self.clean and bool(ok) and float(np.percentile(ok, 99)) * 1000 < P99_LIMIT_MS


class OverloadStack(Stack):
    """The soak's stack with a gateway that limits and sheds (``--serve-gateway`` below)."""

    def __init__(self, *args: Any, full: bool, limits: dict[str, float], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.full = full
        self.limits = limits

    def commands(self) -> list[tuple[str, list[str]]]:
        every = super().commands()
        return every if self.full else [(n, a) for n, a in every if n.endswith("-api")]

    def start(self) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        self.gateway_port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.env()
        for name, args in self.commands():
            self._spawn(name, [sys.executable, "-m", "kiln_cli.main", *args], env)
        targets = {n: f"http://127.0.0.1:{p}" for n, p in self.ports.items()}
        gateway = [sys.executable, str(Path(__file__).resolve()), "--serve-gateway"]
        gateway += [json.dumps({"targets": targets, **self.limits}), "--port"]
        self._spawn("gateway", [*gateway, str(self.gateway_port)], env)


def serve_gateway(spec: str, port: int) -> None:
    import uvicorn

    from kiln_cli.gateway import Gateway

    config = json.loads(spec)
    gateway = Gateway(
        config["targets"],
        rate_per_principal=config["rate"],
        burst_per_principal=config["burst"],
        max_inflight=int(config["inflight"]),
        shed_loop_lag_s=config["loop_lag"],
    )
    uvicorn.run(gateway, host="127.0.0.1", port=port, log_config=None, access_log=False)


def kind_of(code: int, headers: Any) -> str:
    if 200 <= code < 300:
        return "2xx"
    if code in (429, 503) and "retry-after" not in headers:
        return f"{code}-without-retry-after"
    return str(code)


class Load:
    def __init__(self, gateway: str, tokens: list[str], timeout_s: float) -> None:
        self.gateway = gateway
        self.tokens = tokens
        self.timeout_s = timeout_s
        self.client = httpx.AsyncClient(
            base_url=gateway,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200),
        )
        self.rng = random.Random(7)
        self.run = uuid.uuid4().hex[:6]
        self.count = 0
        # The load itself goes through aiohttp: at a few hundred callers httpx's pool spent
        # more of this small box's CPU than the gateway it was meant to press.
        self.session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        await self.client.aclose()
        if self.session is not None:
            await self.session.close()

    async def one(self) -> Answer:
        token = self.tokens[self.rng.randrange(len(self.tokens))]
        headers = {"authorization": f"Bearer {token}"}
        create = self.rng.random() < 0.2
        self.count += 1
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=0)
            self.session = aiohttp.ClientSession(self.gateway, connector=connector)
        started = time.perf_counter()
        try:
            if create:
                body = {"name": f"overload-{self.run}-{self.count}", "task_type": "classification"}
                call = self.session.post("/api/dataset/v1/datasets", json=body, headers=headers)
            else:
                service, path = READS[self.rng.randrange(len(READS))]
                call = self.session.get(f"/api/{service}{path}", headers=headers)
            async with call as r:
                payload = await r.read()
                code, answer_headers = r.status, r.headers
        except aiohttp.ClientError as exc:
            return Answer(started, time.perf_counter() - started, type(exc).__name__)
        created = json.loads(payload).get("id") if create and code == 201 else None
        retry = float(answer_headers.get("retry-after", "0") or 0)
        kind = kind_of(code, answer_headers)
        return Answer(started, time.perf_counter() - started, kind, created, retry)

    async def offer(self, callers: int, seconds: float) -> list[Answer]:
        """``callers`` clients at once for ``seconds``, each sending its next request when the
        last is answered, and waiting as a ``Retry-After`` asks (at most a second) when shed.
        (An open-loop generator in Python on a small box spends its CPU on itself, not on
        Kiln: it only measured its own queue.)"""
        answers: list[Answer] = []
        end = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < end:
                try:
                    answer = await asyncio.wait_for(self.one(), self.timeout_s)
                except TimeoutError:  # the client's whole-request timeout
                    answer = Answer(time.perf_counter() - self.timeout_s, self.timeout_s, "timeout")
                answers.append(answer)
                if answer.kind in ("429", "503"):
                    await asyncio.sleep(min(answer.retry_after_s, 1.0))

        await asyncio.gather(*(caller() for _ in range(callers)))
        return answers

    async def present(self, ids: list[str], token: str) -> int:
        headers = {"authorization": f"Bearer {token}"}
        found = 0
        gate = asyncio.Semaphore(8)

        async def check(dataset_id: str) -> None:
            nonlocal found
            async with gate:
                for _ in range(5):  # the checks may meet a rate limit of their own
                    r = await self.client.get(
                        f"/api/dataset/v1/datasets/{dataset_id}", headers=headers
                    )
                    if r.status_code in (429, 503):
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                        continue
                    found += r.status_code == 200
                    return

        await asyncio.gather(*(check(i) for i in ids))
        return found


async def recover(load: Load, callers: int, timeout_s: float) -> float | None:
    """Seconds from dropping to ``callers`` until a whole second is all 2xx with p99 < limit."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        window = Stage(callers, await load.offer(callers, 1.0))
        if window.sustained():
            return round(time.perf_counter() - started, 1)
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from kiln_core.auth import issue_token
    from kiln_core.settings import Settings

    limits = {"rate": args.rate_per_principal, "burst": 2 * args.rate_per_principal}
    limits["inflight"] = args.gateway_inflight
    limits["loop_lag"] = args.shed_loop_lag
    stack = OverloadStack(
        uuid.uuid4().hex[:8],
        2 + random.randrange(14),
        Path(tempfile.mkdtemp(prefix="kiln-overload-")),
        full=args.full,
        limits=limits,
    )
    log(f"starting the stack (logs in {stack.log_dir})")
    stack.start()
    try:
        await stack.wait_ready(240)
        settings = Settings()
        tokens = [issue_token(f"overload-{i}", ["admin"], settings) for i in range(PRINCIPALS)]
        load = Load(f"http://127.0.0.1:{stack.gateway_port}", tokens, args.timeout)
        await load.offer(5, 2)  # warm-up: first connections, first queries
        stages: list[Stage] = []
        beyond = None
        for callers in args.stages:
            stack.check_alive()
            stage = Stage(callers, await load.offer(callers, args.stage_seconds))
            stages.append(stage)
            log(f"{callers:>4} callers: {stage.summary(args.stage_seconds)}")
            if not stage.clean and beyond is None:
                beyond = args.beyond
            elif beyond is not None:
                beyond -= 1
            if beyond is not None and beyond <= 0 and not stage.clean:
                break
        log(f"dropping to {args.stages[0]} caller(s)")
        recovery_s = await recover(load, args.stages[0], args.recover_timeout)
        stack.check_alive()
        accepted = [a.created for s in stages for a in s.answers if a.created]
        present = await load.present(accepted, tokens[0])
        await load.close()
    finally:
        stack.stop()
        await stack.clean_up()
    answers = [a for s in stages for a in s.answers]
    sustained = [len(s.answers) / args.stage_seconds for s in stages if s.sustained()]
    first_bad = next((i for i, s in enumerate(stages) if not s.clean), len(stages))
    above = Counter(a.kind for s in stages[first_bad:] for a in s.answers if a.kind != "2xx")
    failures = {
        k: n for k, n in Counter(a.kind for a in answers).items() if k not in ("2xx", "429", "503")
    }
    result = {
        "bench": "overload",
        "stage_seconds": args.stage_seconds,
        "processes": "every kiln-up process" if args.full else "each service's API + gateway",
        "rate_per_principal": args.rate_per_principal,
        "principals": PRINCIPALS,
        "stages": [s.summary(args.stage_seconds) for s in stages],
        "max_sustained_rps_p99_under_250ms": round(max(sustained), 1) if sustained else 0,
        "answer_kinds_above_it": dict(above),
        "status_500": sum(1 for a in answers if a.kind == "500"),
        "timeouts": sum(1 for a in answers if a.kind == "timeout"),
        "failures": failures,
        "items_accepted": len(accepted),
        "items_present": present,
        "items_lost": len(accepted) - present,
        "seconds_to_recover": recovery_s,
        "shed_with_retry_after": above.get("429", 0) + above.get("503", 0),
    }
    result["ok"] = bool(
        not failures
        and result["items_lost"] == 0
        and recovery_s is not None
        and first_bad < len(stages)  # it did reach the point of shedding
    )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stages",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 4, 8, 16, 32, 64, 128, 256],
        help="callers at once, one stage each (ascending)",
    )
    parser.add_argument("--stage-seconds", type=float, default=4.0)
    parser.add_argument(
        "--beyond", type=int, default=1, help="stages to run past the first refusal"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="the client's timeout (s)")
    parser.add_argument("--recover-timeout", type=float, default=30.0)
    parser.add_argument("--rate-per-principal", type=float, default=40.0)
    parser.add_argument("--gateway-inflight", type=int, default=64)
    parser.add_argument(
        "--shed-loop-lag", type=float, default=0.05, help="the gateway's CPU shedding threshold (s)"
    )
    parser.add_argument(
        "--full", action="store_true", help="every kiln-up process, not only the APIs"
    )
    parser.add_argument("--serve-gateway", default="", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.serve_gateway:
        serve_gateway(args.serve_gateway, args.port)
        return
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    try:
        result = asyncio.run(run(args))
    except SoakFailed as exc:
        result = {"bench": "overload", "ok": False, "error": str(exc)}
    print(json.dumps(result))
    sys.exit(0 if result.get("ok") else 1)


if __name__ == "__main__":
    main()
