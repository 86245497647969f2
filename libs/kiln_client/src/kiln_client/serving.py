"""Serving: endpoints, and predictions for one input or many."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from kiln_client.transport import Transport
from kiln_client.types import Endpoint, PredictAnswer

ROUTE_KEY_HEADER = "x-kiln-route-key"


class Serving:
    """``client.serving``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def create_endpoint(
        self,
        name: str,
        model_name: str,
        alias: str = "production",
        exist_ok: bool = True,
        **config: Any,
    ) -> Endpoint | None:
        """Create an endpoint; with ``exist_ok`` an existing one of that name is left as is."""
        body = {"name": name, "model_name": model_name, "alias": alias, **config}
        response = await self._t.request(
            "serving", "POST", "/v1/endpoints", json=body, ok=(409,) if exist_ok else ()
        )
        return None if response.status_code == 409 else response.json()

    async def endpoints(self) -> list[Endpoint]:
        answer = await self._t.json("serving", "GET", "/v1/endpoints")
        return answer["items"] if isinstance(answer, dict) else answer  # type: ignore[no-any-return]

    async def endpoint(self, name: str) -> Endpoint:
        return await self._t.json("serving", "GET", f"/v1/endpoints/{name}")  # type: ignore[no-any-return]

    async def update_endpoint(self, name: str, **changes: Any) -> Endpoint:
        return await self._t.json("serving", "PATCH", f"/v1/endpoints/{name}", json=changes)  # type: ignore[no-any-return]

    async def delete_endpoint(self, name: str) -> None:
        await self._t.request("serving", "DELETE", f"/v1/endpoints/{name}")

    async def predict(
        self,
        endpoint: str,
        image: bytes | str | Path,
        *,
        media_type: str = "image/png",
        route_key: str | None = None,
        probabilities: bool = False,
    ) -> PredictAnswer:
        """One input: image bytes (or a path to an image file)."""
        body = Path(image).read_bytes() if isinstance(image, str | Path) else image
        if isinstance(image, str | Path) and str(image).lower().endswith((".jpg", ".jpeg")):
            media_type = "image/jpeg"
        headers = {"content-type": media_type}
        if route_key:
            headers[ROUTE_KEY_HEADER] = route_key
        params = {"probabilities": "true"} if probabilities else None
        return await self._t.json(  # type: ignore[no-any-return]
            "serving",
            "POST",
            f"/v1/endpoints/{endpoint}:predict",
            content=body,
            headers=headers,
            params=params,
            idempotent=True,  # a prediction changes nothing a second call would repeat
        )

    async def predict_many(
        self,
        endpoint: str,
        inputs: list[Any],
        *,
        route_key: str | None = None,
        probabilities: bool = False,
    ) -> PredictAnswer:
        """Several inputs in one request: images (bytes or paths, sent base64), feature rows
        or texts, as the model's signature takes them."""
        encoded = [
            base64.b64encode(_bytes(x)).decode() if isinstance(x, bytes | Path) else x
            for x in inputs
        ]
        headers = {ROUTE_KEY_HEADER: route_key} if route_key else None
        params = {"probabilities": "true"} if probabilities else None
        return await self._t.json(  # type: ignore[no-any-return]
            "serving",
            "POST",
            f"/v1/endpoints/{endpoint}:predict",
            json={"inputs": encoded},
            headers=headers,
            params=params,
            idempotent=True,
        )


def _bytes(source: bytes | Path) -> bytes:
    return source if isinstance(source, bytes) else source.read_bytes()
