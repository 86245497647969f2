"""How Kiln's packages depend on each other: the import-linter contracts (pyproject.toml) hold,
no service package has an import cycle, and importing a module loads only what it needs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("kiln_dataset", "kiln_annotation", "kiln_training", "kiln_registry", "kiln_serving")
PACKAGES = ("kiln_core", "kiln_cli", "kiln_data", *SERVICES)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_import_contracts_hold() -> None:
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(linter), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def _cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """Strongly connected groups of more than one module inside ``package`` (Tarjan)."""
    modules = sorted(graph.find_descendants(package) | {package})
    inside = set(modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & inside - {m}) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return found


def _package_graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)


@pytest.mark.parametrize("package", [*SERVICES, "kiln_core", "kiln_cli", "kiln_data"])
def test_package_has_no_import_cycle(package: str) -> None:
    # Imports inside functions count too: a local import that hides a cycle is still a cycle.
    assert _cycles(_package_graph(), package) == []


def test_cycle_finder_sees_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph, "p") == [["p.a", "p.b"]]


def test_a_format_module_loads_neither_routes_nor_celery() -> None:
    result = _python(
        "import json, sys\n"
        "import kiln_dataset.formats.coco\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "kiln_dataset.formats.coco" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("celery", "kombu", "fastapi")]
    assert not [m for m in loaded if m.startswith(("kiln_dataset.api", "kiln_dataset.service"))]


def test_importing_every_service_module_reads_no_settings_and_builds_no_celery_app() -> None:
    code = (
        "import importlib, json, pkgutil\n"
        "from celery import _state\n"
        "from kiln_core.settings import get_settings\n"
        # Run as a script, and inside Triton's stub (which provides its utilities) only.
        "SKIP = ('__main__', '.triton_backend', '.detection_backend')\n"
        f"for name in {list(SERVICES)!r}:\n"
        "    package = importlib.import_module(name)\n"
        "    for info in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        if '.migrations' in info.name or info.name.endswith(SKIP):\n"
        "            continue\n"
        "        importlib.import_module(info.name)\n"
        "print(json.dumps({'apps': len(list(_state._get_active_apps())),\n"
        "                  'settings': get_settings.cache_info().currsize}))\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"apps": 0, "settings": 0}


def _local_kiln_imports() -> list[str]:
    """Imports of a Kiln module inside a function whose line does not say it avoids a heavy
    dependency (``# heavy: ...``)."""
    found = []
    sources = [*REPO.glob("libs/*/src/**/*.py"), *REPO.glob("services/*/src/**/*.py")]
    for path in sorted(sources):
        if "migrations" in path.parts:
            continue
        text = path.read_text()
        lines = text.splitlines()
        for fn in ast.walk(ast.parse(text)):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                if any(n.startswith("kiln") for n in names):
                    if "# heavy" not in lines[node.lineno - 1]:
                        found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return sorted(set(found))


def test_no_function_local_kiln_import_without_a_heavy_reason() -> None:
    assert _local_kiln_imports() == []
