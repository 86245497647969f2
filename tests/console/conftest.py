"""The web console under test: built from web/, served by `kiln console` (every service in one
embedded process) on a free port, and Debian's Chromium for the browser tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, REPO
from tests.support.apps import free_port
from tests.support.console import install_chromium, running_console

WEB = REPO / "web"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """web/node_modules from the lockfile (npm ci), installed once."""
    if shutil.which("npm") is None:
        _unavailable("npm is not installed (the console needs Node.js 20)")
    from kiln_cli.console import ConsoleBuildFailed, ensure_console_built

    try:
        ensure_console_built(WEB, echo=False)
    except ConsoleBuildFailed as exc:
        pytest.fail(str(exc))
    return WEB / "node_modules"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed by the project's script (never a Playwright download)."""
    try:
        return install_chromium()
    except RuntimeError as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture(scope="module")
def console_url(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`kiln console` on a free port with a fresh state directory, stopped after the module."""
    with running_console(tmp_path_factory.mktemp("console-state"), free_port()) as url:
        yield url
