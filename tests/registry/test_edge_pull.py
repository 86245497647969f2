"""Edge pull: devices download the artifact an alias points at and poll with If-None-Match."""

from __future__ import annotations

import base64
import hashlib

from tests.registry.conftest import Service, auth, import_version, make_model, torchscript_bytes


async def test_edge_pull_streams_with_checksum_and_etag(
    registry_service: Service, unique: str
) -> None:
    client, runtime = registry_service
    device = auth(runtime.settings, "device-17", "viewer")
    name = f"edge{unique}"
    await make_model(client, name)
    first, second = torchscript_bytes(seed=1), torchscript_bytes(seed=2)
    for raw in (first, second):
        assert (await import_version(client, name, raw)).status_code == 201
    url = f"/v1/models/{name}/aliases/production/artifact"
    missing = await client.get(url, headers=device)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (
        await client.post(f"/v1/models/{name}/aliases/production", json={"version": 1})
    ).status_code == 200

    pulled = await client.get(url, headers=device)
    assert pulled.status_code == 200 and pulled.content == first
    sha = hashlib.sha256(first).hexdigest()
    assert pulled.headers["etag"] == f'"{sha}"'
    assert pulled.headers["x-kiln-checksum"] == f"sha256:{sha}"
    assert pulled.headers["repr-digest"] == (
        f"sha-256=:{base64.b64encode(hashlib.sha256(first).digest()).decode()}:"
    )
    assert pulled.headers["x-kiln-model-version"] == "1"
    assert int(pulled.headers["content-length"]) == len(first)

    # Polling with the ETag it has: 304, no body, and the store is not read.
    reads = 0
    real_stream = runtime.store.stream

    def counting_stream(key: str, chunk_size: int = 1 << 20):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return real_stream(key, chunk_size)

    runtime.store.stream = counting_stream  # type: ignore[method-assign]
    try:
        for etag in (f'"{sha}"', f'W/"{sha}"', f'"other", "{sha}"'):
            unchanged = await client.get(url, headers={**device, "if-none-match": etag})
            assert unchanged.status_code == 304 and unchanged.content == b""
            assert unchanged.headers["etag"] == f'"{sha}"'
        assert reads == 0
        # After a promotion the same ETag no longer matches: the new file comes down.
        assert (
            await client.post(f"/v1/models/{name}/aliases/production", json={"version": 2})
        ).status_code == 200
        changed = await client.get(url, headers={**device, "if-none-match": f'"{sha}"'})
        assert changed.status_code == 200 and changed.content == second
        assert changed.headers["etag"] == f'"{hashlib.sha256(second).hexdigest()}"'
        assert reads == 1
    finally:
        runtime.store.stream = real_stream  # type: ignore[method-assign]
