"""Event contract files in ``docs/``: one JSON Schema per event type and the AsyncAPI document.

Writing refuses a backward-incompatible change unless told otherwise, and ``--check`` (run by
the test suite) fails when the committed files are stale or the models broke compatibility.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kiln_core.catalog  # noqa: F401 - registers every event type
from kiln_core.events import EVENT_TYPES, asyncapi_document, breaking_changes, event_json_schema


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def generated_files(out: Path) -> dict[Path, str]:
    files = {out / f"{t}.json": _dump(event_json_schema(t)) for t in sorted(EVENT_TYPES)}
    files[out.parent / "asyncapi.json"] = _dump(asyncapi_document())
    return files


def compatibility_problems(out: Path) -> list[str]:
    """Breaking changes of the current models against the committed schema files."""
    problems: list[str] = []
    if not out.is_dir():
        return problems
    for path in sorted(out.glob("kiln.*.json")):
        event_type = path.name.removesuffix(".json")
        if event_type not in EVENT_TYPES:
            problems.append(f"{event_type}: event type removed")
            continue
        old = json.loads(path.read_text())
        new = event_json_schema(event_type)
        problems += [f"{event_type}: {p}" for p in breaking_changes(old, new)]
    return problems


def write_or_check(out: Path, *, check: bool, allow_breaking: bool = False) -> list[str]:
    problems = compatibility_problems(out)
    if problems and not allow_breaking:
        return ["backward-incompatible event schema change:"] + problems
    files = generated_files(out)
    if check:
        stale = [str(p) for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            return ["event schema docs are stale; run `kiln events schemas`:"] + stale
        return []
    out.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return []
