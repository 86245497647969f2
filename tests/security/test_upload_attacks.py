"""Hostile uploads: path-traversal names, files whose bytes are not what their names claim,
decompression bombs, and archives with zip slip, absolute paths, links or bombs inside. Each is
refused with a reason and leaves nothing behind: no draft item, no import job, no stored
object."""

from __future__ import annotations

import asyncio
import io
import struct
import tarfile
import threading
import uuid
import zipfile
import zlib
from typing import Any

import httpx
import pytest
from PIL import Image

from kiln_core.storage import open_store
from tests.security.conftest import Stack


def png(size: tuple[int, int] = (16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 10)).save(buf, format="JPEG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` × ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def zip_of(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16  # S_IFLNK: a symbolic link to the data
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def tar_with_link(kind: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = png()
        info = tarfile.TarInfo("cats/ok.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("cats/evil.png")
        link.type = kind
        link.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else "cats/ok.png"
        tf.addfile(link)
    return buf.getvalue()


HOSTILE_ARCHIVES: dict[str, bytes] = {
    "zip slip": zip_of({"cats/ok.png": png(), "../../evil.png": png()}),
    "absolute path": zip_of({"cats/ok.png": png(), "/tmp/evil.png": png()}),
    "zip symlink": zip_of({"cats/ok.png": png()}, symlink="cats/link.png"),
    "tar symlink": tar_with_link(tarfile.SYMTYPE),
    "tar hard link": tar_with_link(tarfile.LNKTYPE),
    # 64 MiB of zeros deflate to about 64 KiB: a thousandfold expansion.
    "zip bomb": zip_of({"cats/ok.png": png(), "cats/bomb.png": b"\x00" * (64 * 1024 * 1024)}),
    "not an archive": b"MZ\x90\x00 this is a Windows executable, not an archive" * 10,
}


def store_keys(stack: Stack, prefix: str) -> list[str]:
    """What the dataset service's object store holds under ``prefix`` (read directly)."""
    found: list[str] = []

    def read() -> None:
        async def main() -> None:
            store = open_store(stack.settings.resolve(stack.settings.storage_url, "dataset"))
            found.extend(await store.list(prefix))

        asyncio.run(main())

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(60)
    return found


@pytest.fixture
def dataset(stack: Stack) -> tuple[httpx.Client, str]:
    client = stack.client("dataset", "dora", "data-engineer")
    r = client.post(
        "/v1/datasets", json={"name": f"up-{uuid.uuid4().hex[:8]}", "task_type": "classification"}
    )
    assert r.status_code == 201, r.text
    return client, r.json()["id"]


def upload(client: httpx.Client, ds: str, files: list[tuple[str, bytes, str]]) -> dict[str, Any]:
    draft = client.post(f"/v1/datasets/{ds}/drafts", json={}).json()["id"]
    r = client.post(
        f"/v1/datasets/{ds}/drafts/{draft}/items",
        files=[("files", f) for f in files],
    )
    assert r.status_code < 500, r.text
    return {"draft": draft, "status": r.status_code, **r.json()}


@pytest.mark.integration
def test_hostile_files_are_rejected_and_nothing_is_kept(
    stack: Stack, dataset: tuple[httpx.Client, str]
) -> None:
    client, ds = dataset
    before = set(store_keys(stack, "blobs/"))
    hostile = [
        ("jpeg.png", jpeg(), "image/png"),  # bytes are JPEG, the name says PNG
        ("shell.php.png", b"<?php system($_GET['c']); ?>", "image/png"),
        ("page.png", b"<html><script>alert(1)</script></html>", "text/html"),
        ("bomb.png", png_claiming(100_000, 100_000), "image/png"),
        ("truncated.png", png()[:40], "image/png"),
        ("../../../../tmp/escape.png", png((17, 13)), "image/png"),
        ("/etc/cron.d/escape.png", png((18, 13)), "image/png"),
        ("..\\..\\escape.png", png((19, 13)), "image/png"),
    ]
    result = upload(client, ds, hostile)
    assert result["status"] == 200, result
    assert result["accepted"] == [], result["accepted"]
    reasons = {r["file"]: r["reason"] for r in result["rejected"]}
    assert set(reasons) == {name for name, _, _ in hostile}, reasons
    assert "does not match" in reasons["jpeg.png"]
    assert "too large" in reasons["bomb.png"]
    draft = result["draft"]
    commit = client.post(f"/v1/datasets/{ds}/drafts/{draft}/commit", json={"message": "m"})
    assert commit.status_code in (409, 422), commit.text  # an empty draft has nothing to commit
    assert set(store_keys(stack, "blobs/")) == before


@pytest.mark.integration
def test_a_good_file_beside_hostile_ones_is_still_accepted(
    stack: Stack, dataset: tuple[httpx.Client, str]
) -> None:
    """The control: the rejections above are about the files, not the upload path."""
    client, ds = dataset
    result = upload(client, ds, [("fine.png", png(), "image/png"), ("x.png", jpeg(), "image/png")])
    assert [a["item_id"] for a in result["accepted"]] == ["fine.png"]
    assert [r["file"] for r in result["rejected"]] == ["x.png"]


@pytest.mark.integration
@pytest.mark.parametrize("kind", sorted(HOSTILE_ARCHIVES))
def test_hostile_archive_is_refused_before_anything_is_stored(
    stack: Stack, dataset: tuple[httpx.Client, str], kind: str
) -> None:
    client, ds = dataset
    before = set(store_keys(stack, "imports/"))
    r = client.post(
        f"/v1/datasets/{ds}/imports",
        files={"file": ("data.zip", HOSTILE_ARCHIVES[kind], "application/zip")},
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert set(store_keys(stack, "imports/")) == before
    jobs = client.get("/v1/jobs", params={"dataset_id": ds}).json()
    assert jobs["total"] == 0, jobs
    assert client.get(f"/v1/datasets/{ds}/versions").json()["total"] == 0


class _Payload:
    """Unpickling this runs a shell command: what a hostile "model" file would carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def hostile_models(marker: str) -> dict[str, bytes]:
    import pickle

    import torch

    raw = pickle.dumps(_Payload(marker))
    zipped = io.BytesIO()
    torch.save({"state": _Payload(marker)}, zipped)  # torch.save's zip, a pickle inside
    return {"plain pickle": raw, "torch.save archive": zipped.getvalue()}


@pytest.mark.integration
def test_model_files_are_never_unpickled(stack: Stack, tmp_path: Any) -> None:
    """A registry import of a pickle (bare or in torch.save's archive) is refused as not
    TorchScript, and the code inside never runs."""
    from tests.registry.conftest import import_metadata

    marker = tmp_path / f"pwned-{uuid.uuid4().hex[:8]}"
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    with stack.client("registry", "mel", "ml-engineer") as client:
        assert client.post("/v1/models", json={"name": name}).status_code == 201
        for kind, raw in hostile_models(str(marker)).items():
            r = client.post(
                f"/v1/models/{name}/versions",
                files={"file": ("model.pt", raw, "application/octet-stream")},
                data={"metadata": import_metadata()},
            )
            assert r.status_code == 422, (kind, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert not marker.exists(), f"{kind}: the pickled payload ran"
        assert client.get(f"/v1/models/{name}/versions").json()["total"] == 0
