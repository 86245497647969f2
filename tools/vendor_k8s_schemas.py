"""Vendor the Kubernetes JSON schemas the deployment tests validate ``k8s/`` against.

Reads ``_definitions.json`` of one Kubernetes version from a ``kubernetes-validate`` wheel
(strict variant: unknown fields are errors) and keeps only the object kinds Kiln's manifests
use plus every definition they reference, so the repository holds a small, offline copy::

    pip download --no-deps kubernetes-validate -d /tmp/kv
    python tools/vendor_k8s_schemas.py --wheel /tmp/kv/kubernetes_validate-*.whl --version 1.32.0
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "tests" / "deploy" / "schemas"

# (group, version, kind) of every built-in object Kiln's manifests may contain.
KINDS = [
    ("", "v1", "ConfigMap"),
    ("", "v1", "Namespace"),
    ("", "v1", "Secret"),
    ("", "v1", "Service"),
    ("", "v1", "ServiceAccount"),
    ("apps", "v1", "Deployment"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler"),
    ("batch", "v1", "Job"),
    ("networking.k8s.io", "v1", "Ingress"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("policy", "v1", "PodDisruptionBudget"),
]
REF_PREFIX = "#/$defs/"


def refs_in(node: Any) -> set[str]:
    """Names of every definition a schema node points at."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX) :])
        for value in node.values():
            found |= refs_in(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs_in(value)
    return found


def kind_of(definition: dict[str, Any]) -> tuple[str, str, str] | None:
    gvks = definition.get("x-kubernetes-group-version-kind") or []
    for gvk in gvks:
        key = (gvk.get("group", ""), gvk["version"], gvk["kind"])
        if key in KINDS:
            return key
    return None


def prune(definitions: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The definitions the wanted kinds need, and ``apiVersion/kind`` -> definition name."""
    roots: dict[str, str] = {}
    for name, definition in definitions.items():
        key = kind_of(definition)
        if key is not None:
            group, version, kind = key
            api_version = f"{group}/{version}" if group else version
            roots[f"{api_version}/{kind}"] = name
    if len(roots) != len(KINDS):
        raise SystemExit(f"only these kinds were found in the schemas: {sorted(roots)}")
    keep: set[str] = set()
    todo = list(roots.values())
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo.extend(refs_in(definitions[name]) - keep)
    return {n: definitions[n] for n in sorted(keep)}, dict(sorted(roots.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help="kubernetes-validate wheel")
    parser.add_argument("--version", default="1.32.0", help="Kubernetes version, e.g. 1.32.0")
    args = parser.parse_args()
    member = (
        f"kubernetes_validate/kubernetes-json-schema/v{args.version}-local-strict/_definitions.json"
    )
    with zipfile.ZipFile(args.wheel) as wheel:
        source = json.loads(wheel.read(member))
    definitions, roots = prune(source["$defs"])
    major_minor = ".".join(args.version.split(".")[:2])
    document = {
        "$schema": source.get("$schema", "https://json-schema.org/draft/2020-12/schema"),
        "$comment": (
            f"Kubernetes v{args.version} object schemas (strict), pruned to the kinds Kiln uses; "
            f"from {args.wheel.name} {member} by tools/vendor_k8s_schemas.py. Apache-2.0."
        ),
        "x-kiln-kinds": roots,
        "$defs": definitions,
    }
    out = OUT_DIR / f"kubernetes-v{major_minor}-strict.json"
    out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out.relative_to(REPO)}: {len(roots)} kinds, {len(definitions)} definitions")


if __name__ == "__main__":
    main()
