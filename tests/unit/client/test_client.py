"""kiln_client without services: errors carry the problem, idempotent calls retry with
backoff and others do not, uploads send only the blobs Kiln lacks, event streams parse, and the
sync client answers as the async one does (httpx's MockTransport stands in for Kiln)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kiln_client import ApiError, AsyncKiln, ClientSettings, ConnectionFailed, Kiln, NotFound
from kiln_client.errors import Unavailable
from kiln_client.training import Progress, Status, server_sent_events

FAST = ClientSettings(url="http://kiln", token="t0k", attempts=4, max_backoff_s=0.001)


def kiln_with(handler: httpx.MockTransport) -> AsyncKiln:
    return AsyncKiln(settings=FAST, transport=handler)


async def test_an_error_answer_raises_with_the_problem_fields() -> None:
    problem = {
        "type": "https://kiln.dev/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "no dataset 'x'",
        "instance": "/v1/datasets/x",
        "dataset_id": "x",
    }

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t0k"
        assert request.url.path == "/api/dataset/v1/datasets/x"
        return httpx.Response(
            404, json=problem, headers={"content-type": "application/problem+json"}
        )

    async with kiln_with(httpx.MockTransport(answer)) as kiln:
        with pytest.raises(NotFound) as raised:
            await kiln.datasets.get("x")
    error = raised.value
    assert (error.status, error.title, error.detail) == (404, "Not found", "no dataset 'x'")
    assert error.slug == "not-found" and error.instance == "/v1/datasets/x"
    assert error.extra == {"dataset_id": "x"}


async def test_idempotent_calls_retry_503_and_connection_errors() -> None:
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        if calls == 2:
            return httpx.Response(
                503, json={"title": "Unavailable", "detail": "busy", "status": 503}
            )
        return httpx.Response(200, json={"id": "d1", "name": "n"})

    async with kiln_with(httpx.MockTransport(flaky)) as kiln:
        assert (await kiln.datasets.get("d1"))["id"] == "d1"
    assert calls == 3


async def test_a_post_is_not_repeated_after_it_was_sent() -> None:
    calls = 0

    def busy(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, json={"title": "Unavailable", "detail": "busy", "status": 503})

    async with kiln_with(httpx.MockTransport(busy)) as kiln:
        with pytest.raises(Unavailable):
            await kiln.datasets.create("d")
    assert calls == 1  # creating twice would make two datasets


async def test_retries_give_up_with_connection_failed() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with kiln_with(httpx.MockTransport(down)) as kiln:
        with pytest.raises(ConnectionFailed):
            await kiln.training.get("j")


async def test_upload_sends_only_the_files_whose_blobs_kiln_lacks(tmp_path: Path) -> None:
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "dog").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "a.png").write_bytes(b"\x89PNG-a")
    (tmp_path / "train" / "cat" / "b.png").write_bytes(b"\x89PNG-b")
    (tmp_path / "val" / "dog" / "c.png").write_bytes(b"\x89PNG-c")
    stored = {hashlib.sha256(b"\x89PNG-a").hexdigest()}
    uploaded: list[tuple[str, str]] = []
    refs: list[dict[str, object]] = []

    def dataset(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/dataset")
        if path == "/v1/datasets/d/drafts":
            return httpx.Response(201, json={"id": "dr"})
        if path.endswith("/blob-items"):
            items = json.loads(request.content)["items"]
            refs.extend(items)
            missing = sorted({i["blob"] for i in items} - stored)
            accepted = [{"item_id": i["item_id"]} for i in items if i["blob"] in stored]
            return httpx.Response(
                200, json={"accepted": accepted, "rejected": [], "missing": missing}
            )
        if path.endswith("/items"):
            body = request.content.decode("latin-1")
            split = "train" if 'name="split"\r\n\r\ntrain' in body else "val"
            names = [
                n
                for n in ("train/cat/b.png", "val/dog/c.png", "train/cat/a.png")
                if f'filename="{n}"' in body
            ]
            uploaded.extend((n, split) for n in names)
            return httpx.Response(
                200, json={"accepted": [{"item_id": n} for n in names], "rejected": []}
            )
        if path.endswith("/commit"):
            return httpx.Response(201, json={"version": 1, "item_count": 3})
        return httpx.Response(404, json={"title": "Not found", "detail": path, "status": 404})

    async with kiln_with(httpx.MockTransport(dataset)) as kiln:
        report = await kiln.datasets.upload_folder(
            "d", tmp_path, labels_from_folders=True, progress=False
        )
    assert (report["sent"], report["skipped"], report["files"]) == (2, 1, 3)
    assert sorted(uploaded) == [("train/cat/b.png", "train"), ("val/dog/c.png", "val")]
    by_name = {r["item_id"]: r for r in refs}
    assert by_name["train/cat/a.png"]["labels"] == [{"type": "class", "label": "cat"}]
    assert by_name["val/dog/c.png"]["split"] == "val"


async def test_server_sent_events_parse_into_events() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [
            ": comment",
            "event: progress",
            "id: 7",
            'data: {"step": 1}',
            "",
            "data: x",
            "",
        ]:
            yield line

    events = [e async for e in server_sent_events(lines())]
    assert events == [("progress", '{"step": 1}', "7"), ("message", "x", None)]


def stream_answer(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/events"):
        body = (
            'event: progress\nid: 1\ndata: {"step": 5, "epoch": 1, "metrics": {"loss": 0.5}}\n\n'
            'event: status\ndata: {"status": "running", "step": 5, "epoch": 1, "metrics": {}}\n\n'
            'event: status\ndata: {"status": "succeeded", "step": 9, "epoch": 2, "metrics": {"accuracy": 0.9}}\n\n'
        )
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json={"id": "j", "status": "succeeded"})


def test_the_sync_client_watches_a_job_to_its_end() -> None:
    with Kiln(settings=FAST, transport=httpx.MockTransport(stream_answer)) as kiln:
        events = list(kiln.training.watch("j"))
        final = kiln.training.wait("j")
    assert events[0] == Progress(step=5, epoch=1, metrics={"loss": 0.5})
    assert [e.status for e in events if isinstance(e, Status)] == ["running", "succeeded"]
    assert final["status"] == "succeeded"


def test_settings_come_from_kiln_url_and_kiln_token() -> None:
    settings = ClientSettings.from_env({"KILN_URL": "http://gw:9/", "KILN_TOKEN": "abc"})
    assert (settings.url, settings.token) == ("http://gw:9", "abc")
    assert ClientSettings.from_env({}).token is None


def test_a_non_problem_error_still_says_what_happened() -> None:
    request = httpx.Request("GET", "http://kiln/x")
    error = ApiError.from_response(httpx.Response(502, text="bad gateway", request=request))
    assert error.status == 502 and "bad gateway" in str(error)
    v2 = ApiError.from_response(httpx.Response(400, json={"error": "wrong shape"}, request=request))
    assert v2.detail == "wrong shape"


def test_one_loop_serves_the_sync_client_from_threads() -> None:
    with Kiln(settings=FAST, transport=httpx.MockTransport(stream_answer)) as kiln:

        async def from_another_loop() -> str:
            return str(await asyncio.to_thread(lambda: kiln.training.get("j")["status"]))

        assert asyncio.run(from_another_loop()) == "succeeded"
