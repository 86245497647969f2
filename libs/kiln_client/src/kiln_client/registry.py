"""Registry: models, versions, promote, download an artifact, import a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kiln_client.errors import NotFound
from kiln_client.transport import Transport
from kiln_client.types import ModelVersion, RegisteredModel


class Registry:
    """``client.registry``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def create_model(
        self, name: str, description: str = "", exist_ok: bool = True, team: str | None = None
    ) -> None:
        body = {"name": name, "description": description}
        if team is not None:  # else the caller's only team
            body["team"] = team
        await self._t.request(
            "registry",
            "POST",
            "/v1/models",
            json=body,
            ok=(409,) if exist_ok else (),
        )

    async def models(self, limit: int = 100) -> list[RegisteredModel]:
        page = await self._t.json("registry", "GET", "/v1/models", params={"limit": limit})
        return page["items"]  # type: ignore[no-any-return]

    async def model(self, name: str) -> RegisteredModel:
        return await self._t.json("registry", "GET", f"/v1/models/{name}")  # type: ignore[no-any-return]

    async def versions(self, name: str, limit: int = 100, offset: int = 0) -> list[ModelVersion]:
        """The model's versions (none when the model is not registered yet)."""
        try:
            page = await self._t.json(
                "registry",
                "GET",
                f"/v1/models/{name}/versions",
                params={"limit": limit, "offset": offset},
            )
        except NotFound:
            return []
        return page["items"]  # type: ignore[no-any-return]

    async def version(self, name: str, version: int) -> ModelVersion:
        path = f"/v1/models/{name}/versions/{version}"
        return await self._t.json("registry", "GET", path)  # type: ignore[no-any-return]

    async def aliases(self, name: str) -> dict[str, int]:
        """Alias → version number."""
        rows = await self._t.json("registry", "GET", f"/v1/models/{name}/aliases")
        return {row["alias"]: int(row["version"]) for row in rows}

    async def promote(self, name: str, version: int, alias: str, reason: str = "") -> ModelVersion:
        """Point ``alias`` (production, canary, staging…) at ``version``; refused gates raise
        :class:`~kiln_client.errors.ValidationFailed` listing them."""
        path = f"/v1/models/{name}/aliases/{alias}"
        body = {"version": version, "reason": reason}
        # Pointing an alias where it already points changes nothing: safe to repeat.
        return await self._t.json("registry", "POST", path, json=body, idempotent=True)  # type: ignore[no-any-return]

    async def policy(self, name: str) -> dict[str, Any]:
        return await self._t.json("registry", "GET", f"/v1/models/{name}/policy")  # type: ignore[no-any-return]

    async def set_policy(self, name: str, **policy: Any) -> dict[str, Any]:
        return await self._t.json("registry", "PUT", f"/v1/models/{name}/policy", json=policy)  # type: ignore[no-any-return]

    async def download(self, name: str, version: int, to: str | Path) -> Path:
        """Save the version's TorchScript file to ``to`` (a folder gets ``<name>-v<n>.pt``)."""
        target = Path(to)
        if target.is_dir():
            target = target / f"{name}-v{version}.pt"
        partial = target.with_name(target.name + ".part")
        path = f"/v1/models/{name}/versions/{version}/artifact"
        async with self._t.stream("registry", "GET", path) as response:
            with partial.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
        partial.replace(target)
        return target

    async def import_model(
        self, name: str, torchscript: str | Path | bytes, metadata: dict[str, Any]
    ) -> ModelVersion:
        """Register an external TorchScript model (a file, or its bytes) as a new version;
        ``metadata`` carries its signature, label_map and preprocessing (and optionally
        metrics, tags…)."""
        if isinstance(torchscript, bytes):
            filename, data = "model.pt", torchscript
        else:
            filename, data = Path(torchscript).name, Path(torchscript).read_bytes()
        return await self._t.json(  # type: ignore[no-any-return]
            "registry",
            "POST",
            f"/v1/models/{name}/versions",
            files=lambda: {"file": (filename, data, "application/octet-stream")},
            data={"metadata": json.dumps(metadata)},
        )
