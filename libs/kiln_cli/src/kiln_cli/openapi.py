"""Every service's OpenAPI document, built from its routes without starting it: what the
console's typed clients are generated from (``kiln openapi``, ``npm run generate`` in ``web/``)
and what the staleness test compares them with."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from kiln_cli.services import load_spec
from kiln_core.events import SERVICES
from kiln_core.http import create_app
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings


def service_document(name: str) -> dict[str, Any]:
    """The OpenAPI document ``name``'s API serves at ``/openapi.json``."""
    with tempfile.TemporaryDirectory() as scratch:
        # Nothing is opened: the runtime's adapters connect on start, which never happens here.
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{scratch}/{{service}}.db",
            storage_url=f"file://{scratch}/store",
            bus_url="embedded://openapi",
        )
        return create_app(ServiceRuntime(load_spec(name), settings)).openapi()


def documents() -> dict[str, dict[str, Any]]:
    return {name: service_document(name) for name in SERVICES}


def dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write_documents(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in documents().items():
        path = out / f"{name}.json"
        path.write_text(dump(document))
        written.append(path)
    return written
