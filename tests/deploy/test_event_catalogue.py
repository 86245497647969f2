"""docs/events.md is the current rendering of docs/asyncapi.json and covers every event."""

from __future__ import annotations

import copy
import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.support import REPO

ASYNCAPI = REPO / "docs" / "asyncapi.json"
CATALOGUE = REPO / "docs" / "events.md"


@pytest.fixture(scope="module")
def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_event_catalogue", REPO / "tools" / "render_event_catalogue.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ASYNCAPI.read_text())
    return document


def test_committed_catalogue_is_current(renderer: ModuleType, asyncapi: dict[str, Any]) -> None:
    fresh = renderer.render(asyncapi)
    assert CATALOGUE.read_text() == fresh, (
        "docs/events.md is stale: run python tools/render_event_catalogue.py"
    )


def test_catalogue_lists_every_channel_message_and_field(
    renderer: ModuleType, asyncapi: dict[str, Any]
) -> None:
    text = renderer.render(asyncapi)
    for channel in asyncapi["channels"].values():
        assert f"## `{channel['address']}`" in text
    schemas = asyncapi["components"]["schemas"]
    for message_id, message in asyncapi["components"]["messages"].items():
        section = text.split(f"### `{message['name']}`", 1)[1].split("\n### ", 1)[0]
        for field in schemas[message_id].get("properties", {}):
            assert f"| `{field}` |" in section, f"{message['name']}: {field} missing"


def test_a_new_field_changes_the_rendering(renderer: ModuleType, asyncapi: dict[str, Any]) -> None:
    changed = copy.deepcopy(asyncapi)
    message_id = next(iter(changed["components"]["messages"]))
    changed["components"]["schemas"][message_id].setdefault("properties", {})["shard_hint"] = {
        "type": "integer",
        "description": "an added optional field",
    }
    text = renderer.render(changed)
    assert text != renderer.render(asyncapi)
    assert "| `shard_hint` | integer | no | an added optional field |" in text
