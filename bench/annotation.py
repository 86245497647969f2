"""Annotation: 50 concurrent simulated annotators against Kiln, then against Label Studio.

Each annotator loops: take the next task of a project, submit a classification label for it,
until the queue is empty. The same number of tasks (one small image each) and annotators on
both sides, over HTTP with the same client (aiohttp), on the same machine:

* **Kiln**: the dataset and annotation services as ``kiln up`` runs them (each service's API and
  event process, real processes) on the shared PostgreSQL/Kafka/MinIO/Redis, with their own
  schemas, topics and bucket. The tasks come from a committed dataset version, as in use.
  ``POST /v1/projects/{id}/lease`` then ``POST /v1/tasks/{id}/submission``; every annotator
  has a token of their own (role ``annotator``).
* **Label Studio** (``tools/install_peer_labelstudio.sh``, pinned, in its own virtualenv) on
  the same PostgreSQL in a database of its own, served by uWSGI with the processes its
  production image uses (``deploy/uwsgi.ini``: 4, master, single interpreter), ``DEBUG`` off.
  One user per annotator in one organisation (legacy API tokens). ``GET
  /api/projects/{id}/next`` then ``POST /api/tasks/{id}/annotations``; the project takes one
  annotation per task (``maximum_annotations=1``), as Kiln's overlap 1.

Figures: ``tasks_per_s``, ``lease_p50_ms``/``lease_p99_ms``, ``submit_p99_ms`` (Kiln);
``ls_tasks_per_s``, ``ls_next_p50_ms``/``ls_next_p99_ms``, ``ls_submit_p99_ms``;
``annotation_ratio`` = Kiln / Label Studio tasks per second; ``label_studio_version``.
Last line: one JSON object.

    .venv/bin/python bench/annotation.py [--tasks 500] [--annotators 50] [--side both|kiln|ls]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peers import (  # noqa: E402
    PG_HOST,
    PG_PASSWORD,
    PG_PORT,
    PG_USER,
    KilnServices,
    PeerFailed,
    Server,
    Timings,
    drive,
    ensure_database,
    free_port,
    install_peer,
    log,
    peer_version,
    timed,
)
from bench.soak import SoakFailed  # noqa: E402

LABELS = ["a", "b", "c"]
LS_DATABASE = "kiln_peer_label_studio"
LS_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<Choices name="choice" toName="image">'
    + "".join(f'<Choice value="{label}"/>' for label in LABELS)
    + "</Choices></View>"
)


def png(rng: np.random.Generator, size: int = 16) -> bytes:
    from PIL import Image

    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# --- Kiln ----------------------------------------------------------------------------------------


async def kiln_side(args: argparse.Namespace, images: list[bytes]) -> dict[str, Any]:
    from kiln_client import AsyncKiln, ClientSettings
    from kiln_core.auth import issue_token
    from kiln_core.settings import Settings

    run = uuid.uuid4().hex[:8]
    stack = KilnServices(run, args.redis_db, REPO / ".kiln" / "bench" / f"annotation-{run}")
    stack.services = ("dataset", "annotation")
    log(f"kiln: starting dataset + annotation services (logs in {stack.log_dir})")
    stack.start()
    try:
        await stack.wait_ready(120)
        urls = {s: f"http://127.0.0.1:{stack.ports[s]}" for s in ("dataset", "annotation")}
        admin = issue_token("bench", ["admin"], Settings(), teams=[Settings().default_team])
        settings = ClientSettings(url=urls["annotation"], token=admin, service_urls=urls)
        async with AsyncKiln(settings=settings) as k:
            dataset = await k.datasets.create(f"bench-annotation-{run}", "classification")
            project = await k.annotation.create_project(
                f"bench-annotation-{run}",
                dataset["id"],
                LABELS,
                batch_size=1,
                review_levels=0,
            )
            draft = await k.datasets.open_draft(dataset["id"])
            files: list[tuple[str, Path | bytes]] = [
                (f"i{n:06}.png", data) for n, data in enumerate(images)
            ]
            await k.datasets.add_files(dataset["id"], draft, files, progress=False)
            await k.datasets.commit(dataset["id"], draft, "bench")
            deadline = time.monotonic() + 300
            while True:
                counts = (await k.annotation.project(project["id"]))["task_counts"]
                if counts.get("queued", 0) >= len(images):
                    break
                if time.monotonic() > deadline:
                    raise SoakFailed(f"tasks not created in time: {counts}")
                await asyncio.sleep(0.5)
        log(f"kiln: {len(images)} tasks queued; {args.annotators} annotators start")
        timings = Timings()
        done = [0]
        base = urls["annotation"]
        lease_url = f"{base}/v1/projects/{project['id']}/lease"
        connector = aiohttp.TCPConnector(limit=args.annotators)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def annotator(i: int) -> None:
                token = issue_token(
                    f"annotator{i}", ["annotator"], Settings(), teams=[Settings().default_team]
                )
                headers = {"authorization": f"Bearer {token}"}

                async def lease() -> dict[str, Any] | None:
                    async with session.post(lease_url, headers=headers) as r:
                        if r.status == 204:
                            return None
                        if r.status != 200:
                            raise SoakFailed(f"lease: {r.status} {await r.text()}")
                        return dict(await r.json())

                while True:
                    task = await timed(timings, "lease", lease)
                    if task is None:
                        return
                    labels = {
                        item["item_id"]: [{"type": "class", "label": LABELS[done[0] % 3]}]
                        for item in task["items"]
                    }
                    url = f"{base}/v1/tasks/{task['id']}/submission"

                    async def submit(url: str = url, body: Any = labels) -> None:
                        async with session.post(url, json={"labels": body}, headers=headers) as r:
                            if r.status != 200:
                                raise SoakFailed(f"submit: {r.status} {await r.text()}")

                    await timed(timings, "submit", submit)
                    done[0] += 1

            seconds = await drive(args.annotators, annotator)
        if done[0] != len(images):
            raise SoakFailed(f"kiln: {done[0]} of {len(images)} tasks submitted")
        return {
            "tasks_per_s": round(done[0] / seconds, 1),
            "lease_p50_ms": timings.ms("lease", 50),
            "lease_p99_ms": timings.ms("lease", 99),
            "submit_p50_ms": timings.ms("submit", 50),
            "submit_p99_ms": timings.ms("submit", 99),
            "kiln_seconds": round(seconds, 2),
        }
    finally:
        stack.stop()
        await stack.clean_up()


# --- Label Studio --------------------------------------------------------------------------------

LS_SETUP = """
import json, sys
import django
django.setup()
from django.db import transaction
from users.models import User
from organizations.functions import create_organization
from rest_framework.authtoken.models import Token

run, n = sys.argv[1], int(sys.argv[2])
with transaction.atomic():
    owner = User.objects.create_user(email=f"owner-{run}@bench.local", password="bench-pass-1")
    org = create_organization(f"bench-{run}", owner, legacy_api_tokens_enabled=True)
    owner.active_organization = org
    owner.save()
    tokens = [Token.objects.get_or_create(user=owner)[0].key]
    for i in range(n):
        user = User.objects.create_user(email=f"a{i}-{run}@bench.local", password="bench-pass-1")
        org.add_user(user)
        user.active_organization = org
        user.save()
        tokens.append(Token.objects.get_or_create(user=user)[0].key)
print(json.dumps(tokens))
"""


def ls_env(python: Path, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "core.settings.label_studio",
        "DJANGO_DB": "default",
        "POSTGRE_NAME": LS_DATABASE,
        "POSTGRE_USER": PG_USER,
        "POSTGRE_PASSWORD": PG_PASSWORD,
        "POSTGRE_HOST": PG_HOST,
        "POSTGRE_PORT": str(PG_PORT),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "SECRET_KEY": "kiln-bench-not-secret",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "SENTRY_DSN": "",  # no error reports leave the machine
        "FRONTEND_SENTRY_DSN": "",
        "PYTHONPATH": str(ls_package_dir(python)),
    }


def ls_package_dir(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import label_studio as m, os; print(os.path.dirname(m.__file__))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise PeerFailed(f"label_studio does not import: {out.stderr[-1000:]}")
    return Path(out.stdout.strip())


def ls_prepare(python: Path, env: dict[str, str], package: Path, run: str, n: int) -> list[str]:
    """Migrate Label Studio's database; an owner and ``n`` annotators: their API tokens."""
    migrate = subprocess.run(
        [str(python), str(package / "manage.py"), "migrate", "--noinput"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if migrate.returncode != 0:
        raise PeerFailed(f"label studio migrate failed: {migrate.stderr[-3000:]}")
    setup = subprocess.run(
        [str(python), "-c", LS_SETUP, run, str(n)],
        env=env,
        cwd=package,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if setup.returncode != 0:
        raise PeerFailed(f"label studio users failed: {setup.stderr[-3000:]}")
    return list(json.loads(setup.stdout.strip().splitlines()[-1]))


async def ls_side(args: argparse.Namespace, images: list[bytes]) -> dict[str, Any]:
    python = install_peer("install_peer_labelstudio.sh")
    version = peer_version(python, "label-studio")
    run = uuid.uuid4().hex[:8]
    data_dir = REPO / ".kiln" / "bench" / "label-studio-data"
    env = ls_env(python, data_dir)
    package = ls_package_dir(python)
    await ensure_database(LS_DATABASE)
    log(f"label studio {version}: migrating its database {LS_DATABASE}")
    tokens = await asyncio.to_thread(ls_prepare, python, env, package, run, args.annotators)
    port = free_port()
    uwsgi = python.parent / "uwsgi"
    server = Server(
        "label-studio",
        [
            str(uwsgi),
            "--http",
            f"127.0.0.1:{port}",
            "--module",
            "core.wsgi:application",
            "--chdir",
            str(package),
            "--master",
            "--processes",
            str(args.ls_processes),
            "--single-interpreter",
            "--need-app",
            "--buffer-size",
            "65535",
            "--die-on-term",
            # Keep the clients' connections open, as nginx in front of it would.
            "--http-keepalive",
            "--disable-logging",
            # Sentry and LaunchDarkly's clients need these in a preforking uWSGI.
            "--enable-threads",
            "--py-call-uwsgi-fork-hooks",
            "--env",
            "APP_WEBSERVER=uwsgi",
        ],
        env,
        REPO / ".kiln" / "bench" / f"label-studio-{run}.log",
        port,
    )
    log(f"label studio: uwsgi with {args.ls_processes} processes on :{port}")
    server.start()
    try:
        await server.wait_ready("/health", 180)
        owner = {"authorization": f"Token {tokens[0]}"}
        async with aiohttp.ClientSession() as session:
            body = {
                "title": f"bench-{run}",
                "label_config": LS_CONFIG,
                "maximum_annotations": 1,
                "sampling": "Sequential sampling",
            }
            async with session.post(f"{server.url}/api/projects", json=body, headers=owner) as r:
                if r.status != 201:
                    raise PeerFailed(f"label studio project: {r.status} {await r.text()}")
                project = await r.json()
            # The same images, as the URLs of their files (Label Studio stores task data; its
            # next-task and annotation calls never read the image).
            tasks = [
                {"data": {"image": f"http://127.0.0.1:59000/bench/i{n:06}.png"}}
                for n in range(len(images))
            ]
            url = f"{server.url}/api/projects/{project['id']}/import"
            async with session.post(url, json=tasks, headers=owner) as r:
                if r.status != 201:
                    raise PeerFailed(f"label studio import: {r.status} {await r.text()}")
        log(f"label studio: {len(images)} tasks imported; {args.annotators} annotators start")
        timings = Timings()
        done = [0]
        next_url = f"{server.url}/api/projects/{project['id']}/next"
        connector = aiohttp.TCPConnector(limit=args.annotators)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def annotator(i: int) -> None:
                headers = {"authorization": f"Token {tokens[i + 1]}"}

                async def take() -> dict[str, Any] | None:
                    async with session.get(next_url, headers=headers) as r:
                        if r.status == 404:
                            return None
                        if r.status != 200:
                            raise PeerFailed(f"label studio next: {r.status} {await r.text()}")
                        return dict(await r.json())

                while True:
                    task = await timed(timings, "next", take)
                    if task is None:
                        return
                    result = [
                        {
                            "from_name": "choice",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [LABELS[done[0] % 3]]},
                        }
                    ]
                    url = f"{server.url}/api/tasks/{task['id']}/annotations"

                    async def submit(url: str = url, result: Any = result) -> None:
                        async with session.post(url, json={"result": result}, headers=headers) as r:
                            if r.status != 201:
                                raise PeerFailed(f"label studio annotate: {r.status}")

                    await timed(timings, "submit", submit)
                    done[0] += 1

            seconds = await drive(args.annotators, annotator)
        if done[0] != len(images):
            raise PeerFailed(f"label studio: {done[0]} of {len(images)} tasks annotated")
        return {
            "ls_tasks_per_s": round(done[0] / seconds, 1),
            "ls_next_p50_ms": timings.ms("next", 50),
            "ls_next_p99_ms": timings.ms("next", 99),
            "ls_submit_p50_ms": timings.ms("submit", 50),
            "ls_submit_p99_ms": timings.ms("submit", 99),
            "ls_seconds": round(seconds, 2),
            "label_studio_version": version,
            "ls_processes": args.ls_processes,
        }
    finally:
        server.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(24)
    images = [png(rng) for _ in range(args.tasks)]
    out: dict[str, Any] = {"tasks": args.tasks, "annotators": args.annotators}
    if args.side in ("both", "kiln"):
        out.update(await kiln_side(args, images))
    if args.side in ("both", "ls"):
        out.update(await ls_side(args, images))
    if "tasks_per_s" in out and "ls_tasks_per_s" in out:
        out["annotation_ratio"] = round(out["tasks_per_s"] / out["ls_tasks_per_s"], 3)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--side", choices=("both", "kiln", "ls"), default="both")
    parser.add_argument(
        "--ls-processes", type=int, default=4, help="uWSGI processes (Label Studio's default)"
    )
    parser.add_argument("--redis-db", type=int, default=13)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args()))))
