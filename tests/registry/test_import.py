"""Importing an external TorchScript model: checked by loading and running it once; anything
else is refused with problem+json and nothing is stored."""

from __future__ import annotations

import io
import pickle
from typing import Any

import httpx
import pytest
import torch

from kiln_core.service import ServiceRuntime
from tests.registry.conftest import (
    FEATURES,
    LABELS,
    Service,
    TinyClassifier,
    import_version,
    make_model,
    torchscript_bytes,
)


async def _stored_blobs(runtime: ServiceRuntime) -> list[str]:
    return await runtime.store.list("blobs/")


async def test_good_torchscript_is_accepted_and_runnable(
    registry_service: Service, unique: str
) -> None:
    client, runtime = registry_service
    name = f"imp{unique}"
    await make_model(client, name, tags=["tabular"])
    raw = torchscript_bytes(seed=3)
    response = await import_version(client, name, raw, description="from a partner")
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["version"] == 1 and version["status"] == "registered"
    assert version["lineage"]["source"] == "import"
    assert version["artifact"]["signature"]["inputs"][0]["shape"] == [FEATURES]
    assert version["artifact"]["label_map"] == LABELS
    assert version["artifact"]["preprocessing"]["kind"] == "tabular"
    assert version["size_bytes"] == len(raw) and version["tags"] == ["imported"]
    assert version["created_by"] == "tester"
    pulled = (await client.get(f"/v1/models/{name}/versions/1/artifact")).content
    assert pulled == raw
    logits = torch.jit.load(io.BytesIO(pulled))(torch.randn(4, FEATURES))
    assert logits.shape == (4, len(LABELS))
    assert len(await _stored_blobs(runtime)) == 1


def _pickled_state_dict() -> bytes:
    buffer = io.BytesIO()
    torch.save(TinyClassifier().state_dict(), buffer)
    return buffer.getvalue()


def _pickled_module() -> bytes:
    buffer = io.BytesIO()
    torch.save(TinyClassifier(), buffer)
    return buffer.getvalue()


BAD_FILES: list[Any] = [
    pytest.param(
        lambda: b"\x00garbage bytes, not a model" * 10, {}, "not a TorchScript", id="garbage"
    ),
    pytest.param(
        lambda: pickle.dumps({"weights": [1, 2, 3]}), {}, "not a TorchScript", id="pickle"
    ),
    pytest.param(_pickled_state_dict, {}, "no TorchScript code", id="torch-save-state-dict"),
    pytest.param(_pickled_module, {}, "no TorchScript code", id="torch-save-module"),
    pytest.param(
        torchscript_bytes,
        {
            "signature": {
                "inputs": [{"name": "x", "dtype": "FP32", "shape": [10]}],
                "outputs": [{"name": "y", "dtype": "FP32", "shape": [3]}],
            }
        },
        "running the model",
        id="wrong-input-shape",
    ),
    pytest.param(
        torchscript_bytes,
        {
            "signature": {
                "inputs": [{"name": "x", "dtype": "FP32", "shape": [FEATURES]}],
                "outputs": [{"name": "y", "dtype": "FP32", "shape": [5]}],
            }
        },
        "signature mismatch",
        id="wrong-output-shape",
    ),
    pytest.param(torchscript_bytes, {"label_map": ["a", "b"]}, "label map", id="wrong-label-map"),
]


@pytest.mark.parametrize(("make_file", "meta", "reason"), BAD_FILES)
async def test_bad_model_files_are_refused_and_nothing_is_stored(
    registry_service: Service, unique: str, make_file: Any, meta: dict[str, Any], reason: str
) -> None:
    client, runtime = registry_service
    name = f"bad{unique}"
    await make_model(client, name)
    response = await import_version(client, name, make_file(), **meta)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/invalid-model") and reason in problem["detail"]
    await _nothing_stored(client, runtime, name)


async def test_malformed_metadata_is_refused(registry_service: Service, unique: str) -> None:
    client, runtime = registry_service
    name = f"meta{unique}"
    await make_model(client, name)
    response = await client.post(
        f"/v1/models/{name}/versions",
        files={"file": ("m.pt", torchscript_bytes(), "application/octet-stream")},
        data={"metadata": '{"label_map": ["a"]}'},
    )
    assert response.status_code == 422
    assert response.json()["type"].endswith("/validation-failed")
    assert "metadata.signature" in response.json()["detail"]
    await _nothing_stored(client, runtime, name)


async def test_viewer_cannot_import(registry_service: Service, unique: str) -> None:
    from tests.registry.conftest import auth

    client, runtime = registry_service
    name = f"ro{unique}"
    await make_model(client, name)
    response = await client.post(
        f"/v1/models/{name}/versions",
        files={"file": ("m.pt", torchscript_bytes(), "application/octet-stream")},
        data={"metadata": "{}"},
        headers=auth(runtime.settings, "vera", "viewer"),
    )
    assert response.status_code == 403
    await _nothing_stored(client, runtime, name)


async def _nothing_stored(client: httpx.AsyncClient, runtime: ServiceRuntime, name: str) -> None:
    assert (await client.get(f"/v1/models/{name}/versions")).json()["total"] == 0
    assert await _stored_blobs(runtime) == []
    log = (await client.get(f"/v1/models/{name}/log")).json()["items"]
    assert [entry["action"] for entry in log] == ["model.created"]


async def test_stored_bytes_with_the_same_signature_reuse_their_check(
    registry_service: Service, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registering an artifact the registry already checked (same bytes, signature and labels)
    skips loading it again; other labels for the same bytes are checked afresh."""
    from kiln_registry import torchscript

    client, runtime = registry_service
    name = f"imp{unique}"
    await make_model(client, name)
    raw = torchscript_bytes(seed=11)
    first = await import_version(client, name, raw)
    assert first.status_code == 201, first.text
    real = torchscript.check_isolated
    checked: list[list[str]] = []

    def counting(raw: bytes, signature: Any, label_map: list[str], **kw: Any) -> Any:
        checked.append(label_map)
        return real(raw, signature, label_map, **kw)

    monkeypatch.setattr(torchscript, "check_isolated", counting)
    again = await import_version(client, name, raw)
    assert again.status_code == 201, again.text
    assert checked == []
    assert again.json()["lineage"]["checked_outputs"] == first.json()["lineage"]["checked_outputs"]
    other = await import_version(client, name, raw, label_map=["x", "y", "z"])
    assert other.status_code == 201, other.text
    assert checked == [["x", "y", "z"]]
    assert len(await _stored_blobs(runtime)) == 1
