"""The console's typed API clients match the services' current OpenAPI documents."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kiln_cli.openapi import service_document
from kiln_core.events import SERVICES
from tests.console.conftest import WEB


@pytest.mark.parametrize("service", SERVICES)
def test_committed_document_is_the_live_one(service: str) -> None:
    committed = json.loads((WEB / "openapi" / f"{service}.json").read_text())
    assert committed == service_document(service), (
        f"web/openapi/{service}.json is stale: run `npm run generate` in web/"
    )


def test_generated_clients_match_the_documents(node_modules: Path) -> None:
    result = subprocess.run(
        ["node", "scripts/generate-api.mjs", "--check"], cwd=WEB, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_typescript_and_component_tests_pass(node_modules: Path) -> None:
    """tsc --strict over the console and its Vitest tests (canvas logic, forms, gates)."""
    typecheck = subprocess.run(["npx", "tsc", "-b"], cwd=WEB, capture_output=True, text=True)
    assert typecheck.returncode == 0, typecheck.stdout[-3000:]
    vitest = subprocess.run(["npx", "vitest", "run"], cwd=WEB, capture_output=True, text=True)
    assert vitest.returncode == 0, vitest.stdout[-3000:]
