"""Compression: a Celery job quantises a version to int8 and registers a derived version."""

from __future__ import annotations

import io

import torch

from tests.registry.conftest import (
    FEATURES,
    Service,
    import_version,
    make_model,
    torchscript_bytes,
)
from tests.support.apps import wait_job


async def test_compression_registers_a_smaller_derived_version(
    registry_service: Service, unique: str
) -> None:
    client, _ = registry_service
    name = f"cmp{unique}"
    await make_model(client, name)
    original = torchscript_bytes(seed=7)
    assert (await import_version(client, name, original, tags=["base"])).status_code == 201
    accepted = await client.post(
        f"/v1/models/{name}/versions/1/compress", json={"samples": 128, "seed": 1}
    )
    assert accepted.status_code == 202, accepted.text
    job = await wait_job(client, accepted.json()["status_url"], timeout_s=120)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["version"] == 2 and result["method"] == "dynamic-int8"
    assert result["original_size_bytes"] == len(original)
    assert result["compressed_size_bytes"] < 0.6 * len(original)
    assert result["size_ratio"] == round(result["compressed_size_bytes"] / len(original), 6)
    assert 0.9 <= result["top1_agreement"] <= 1.0 and result["samples"] == 128
    assert "not measured" in result["accuracy_change"]

    derived = (await client.get(f"/v1/models/{name}/versions/2")).json()
    parent = (await client.get(f"/v1/models/{name}/versions/1")).json()
    assert derived["lineage"]["source"] == "compression"
    assert derived["lineage"]["parent_model_version_id"] == parent["version_id"]
    assert derived["lineage"]["parent_version"] == 1
    assert derived["compression"]["size_ratio"] == result["size_ratio"]
    assert derived["size_bytes"] == result["compressed_size_bytes"]
    assert derived["artifact"]["signature"] == parent["artifact"]["signature"]
    assert derived["artifact"]["label_map"] == parent["artifact"]["label_map"]
    assert derived["tags"] == ["base", "int8"]
    assert derived["metrics"] == {"top1_agreement": result["top1_agreement"]}

    # The derived file is TorchScript with int8 kernels, and follows the original.
    raw = (await client.get(f"/v1/models/{name}/versions/2/artifact")).content
    quantized = torch.jit.load(io.BytesIO(raw))
    assert "quantized::linear_dynamic" in str(quantized.inlined_graph)
    reference = torch.jit.load(io.BytesIO(original))
    x = torch.randn(256, FEATURES, generator=torch.Generator().manual_seed(5))
    agree = (quantized(x).argmax(1) == reference(x).argmax(1)).float().mean().item()
    assert agree >= 0.9
    log = (await client.get(f"/v1/models/{name}/versions/1/log")).json()
    assert [e["action"] for e in log] == ["compression.requested", "version.created"]


async def test_compressing_a_model_without_linear_layers_fails_the_job(
    registry_service: Service, unique: str
) -> None:
    client, _ = registry_service
    name = f"conv{unique}"
    await make_model(client, name)

    class NoLinear(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :3] * 2.0

    raw = torchscript_bytes(module=NoLinear())
    assert (await import_version(client, name, raw)).status_code == 201
    accepted = await client.post(f"/v1/models/{name}/versions/1/compress")
    job = await wait_job(client, accepted.json()["status_url"], timeout_s=120)
    assert job["status"] == "failed" and "no Linear layers" in job["error"]["detail"]
    assert (await client.get(f"/v1/models/{name}/versions")).json()["total"] == 1
