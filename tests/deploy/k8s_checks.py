"""Render the Kustomize overlays and check every object: Kubernetes/KEDA schemas, then what
Kiln needs of the whole (probes, resources, autoscaling, budgets, policies, references)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml

from tests.deploy.support import (
    PORTS,
    REPO,
    SCHEMAS,
    SERVICES,
    WORKER_SERVICES,
    cache_dir,
    load_json,
)

K8S = REPO / "k8s"
TARGETS = ("base", "overlays/dev", "overlays/prod")
K8S_SCHEMAS = SCHEMAS / "kubernetes-v1.32-strict.json"
CRD_SCHEMAS = {"keda.sh/v1alpha1/ScaledObject": SCHEMAS / "keda-scaledobject-v1alpha1.json"}
KUSTOMIZE_VERSION = "v5.5.0"
CONSOLE_PORT = 8080  # web/deploy/nginx.conf

Obj = dict[str, Any]


def find_kustomize() -> str | None:
    """``$KILN_KUSTOMIZE``, the pinned build of tools/install_kustomize.sh, or one on PATH."""
    if env := os.environ.get("KILN_KUSTOMIZE"):
        return env
    pinned = cache_dir() / "bin" / "kustomize"
    stamp = cache_dir() / "bin" / "kustomize.version"
    if pinned.is_file() and stamp.is_file() and stamp.read_text().strip() == KUSTOMIZE_VERSION:
        return str(pinned)
    return shutil.which("kustomize")


def build(kustomize: str, directory: Path) -> list[Obj]:
    """``kustomize build`` of one directory as a list of objects; raises on a failed build."""
    done = subprocess.run(
        [kustomize, "build", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kustomize build {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def key_of(obj: Obj) -> str:
    return f"{obj.get('apiVersion')}/{obj.get('kind')}"


@cache
def _k8s_document() -> Obj:
    doc: Obj = load_json(K8S_SCHEMAS)
    # Checked once against its meta-schema; the per-kind views below share its definitions.
    jsonschema.validators.validator_for(doc).check_schema(doc)
    return doc


@cache
def _validator(key: str) -> jsonschema.protocols.Validator | None:
    if key in CRD_SCHEMAS:
        schema = load_json(CRD_SCHEMAS[key])
        jsonschema.validators.validator_for(schema).check_schema(schema)
    else:
        doc = _k8s_document()
        definition = doc["x-kiln-kinds"].get(key)
        if definition is None:
            return None
        # Validate against one definition while its siblings stay resolvable by "#/$defs/…".
        schema = {"$schema": doc["$schema"], "$defs": doc["$defs"], "$ref": f"#/$defs/{definition}"}
    return jsonschema.validators.validator_for(schema)(schema)


def schema_errors(objects: list[Obj]) -> list[str]:
    """Every object against its Kubernetes (or CRD) schema; an unknown kind is an error."""
    problems = []
    for obj in objects:
        name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        validator = _validator(key_of(obj))
        if validator is None:
            problems.append(f"{name}: no schema for {key_of(obj)}")
            continue
        for error in validator.iter_errors(obj):
            path = "/".join(map(str, error.absolute_path))
            problems.append(f"{name}: {path}: {error.message[:300]}")
    return problems


def of_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(deployment: Obj) -> Iterator[Obj]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def kiln_problems(objects: list[Obj], *, overlay: bool) -> list[str]:
    """What Kiln needs of a rendered target beyond the schemas."""
    p: list[str] = []
    deployments = of_kind(objects, "Deployment")
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    scaled = of_kind(objects, "ScaledObject")
    pdbs = of_kind(objects, "PodDisruptionBudget")
    accounts = of_kind(objects, "ServiceAccount")
    services = of_kind(objects, "Service")
    configmaps = of_kind(objects, "ConfigMap")
    secrets = of_kind(objects, "Secret")
    policies = of_kind(objects, "NetworkPolicy")

    expected = [f"{s}-api" for s in SERVICES] + [f"{s}-consumer" for s in SERVICES]
    expected += [f"{s}-worker" for s in WORKER_SERVICES] + ["console"]
    for name in expected:
        if name not in deployments:
            p.append(f"Deployment {name} is missing")

    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not matches(d["spec"]["selector"]["matchLabels"], labels):
            p.append(f"{name}: selector does not match its pod labels")
        for c in containers(d):
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part) or {}):
                    p.append(f"{name}/{c['name']}: no cpu and memory {part}")
        p += _capacity_problems(name, pod["containers"])
        if not any(matches(b["spec"]["selector"]["matchLabels"], labels) for b in pdbs.values()):
            p.append(f"{name}: no PodDisruptionBudget covers it")
        account = pod.get("serviceAccountName")
        if account not in accounts:
            p.append(f"{name}: service account {account!r} is not defined")
        if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
            p.append(f"{name}: pods may run as root")
        component = labels.get("app.kubernetes.io/component")
        main = pod["containers"][0]
        if component == "api":
            svc = name.removesuffix("-api")
            live = (main.get("livenessProbe") or {}).get("httpGet", {})
            ready = (main.get("readinessProbe") or {}).get("httpGet", {})
            if live.get("path") != "/healthz" or ready.get("path") != "/readyz":
                p.append(f"{name}: liveness must be /healthz and readiness /readyz")
            ports = {port["name"]: port["containerPort"] for port in main.get("ports", [])}
            if ports.get("http") != PORTS.get(svc):
                p.append(f"{name}: http port is not {PORTS.get(svc)}")
            if name not in hpas:
                p.append(f"{name}: no HorizontalPodAutoscaler")
        elif component == "console":
            live = (main.get("livenessProbe") or {}).get("httpGet", {})
            ready = (main.get("readinessProbe") or {}).get("httpGet", {})
            if live.get("path") != "/healthz" or ready.get("path") != "/healthz":
                p.append(f"{name}: liveness and readiness must be /healthz")
            ports = {port["name"]: port["containerPort"] for port in main.get("ports", [])}
            if ports.get("http") != CONSOLE_PORT:
                p.append(f"{name}: http port is not {CONSOLE_PORT} (nginx unprivileged)")
            if not (main.get("securityContext") or {}).get("readOnlyRootFilesystem"):
                p.append(f"{name}: root filesystem is writable")
            if name not in hpas:
                p.append(f"{name}: no HorizontalPodAutoscaler")
        elif component == "worker":
            if "livenessProbe" not in main:
                p.append(f"{name}: no liveness probe")
            if name not in hpas:
                p.append(f"{name}: no HorizontalPodAutoscaler")
        elif component == "consumer":
            if "readinessProbe" not in main:
                p.append(f"{name}: no readiness probe")
            if name in hpas:
                p.append(f"{name}: an HPA would fight KEDA over the replicas")
            if "replicas" in d["spec"]:
                p.append(f"{name}: replicas are KEDA's to set")
        if overlay:
            for source in main.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                pool = configmaps if "configMapRef" in source else secrets
                if ref["name"] not in pool:
                    p.append(f"{name}: envFrom {ref['name']} does not exist")

    for name, h in hpas.items():
        target = h["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            p.append(f"HPA {name}: target {target} does not exist")
        if h["spec"]["minReplicas"] > h["spec"]["maxReplicas"]:
            p.append(f"HPA {name}: minReplicas > maxReplicas")

    partitions = _topic_partitions(configmaps) if overlay else None
    brokers = _bootstrap(configmaps) if overlay else None
    for svc in SERVICES:
        so = scaled.get(f"{svc}-consumer")
        if so is None:
            p.append(f"ScaledObject {svc}-consumer is missing")
            continue
        spec = so["spec"]
        if spec["scaleTargetRef"]["name"] not in deployments:
            p.append(f"ScaledObject {svc}-consumer: target does not exist")
        kafka = [t for t in spec["triggers"] if t["type"] == "kafka"]
        if not kafka or kafka[0]["metadata"].get("consumerGroup") != f"kiln-{svc}":
            p.append(f"ScaledObject {svc}-consumer: no kafka lag trigger on group kiln-{svc}")
        elif brokers is not None and kafka[0]["metadata"].get("bootstrapServers") != brokers:
            p.append(f"ScaledObject {svc}-consumer: watches a different Kafka than KILN_BUS_URL")
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if low > high:
            p.append(f"ScaledObject {svc}-consumer: minReplicaCount > maxReplicaCount")
        if partitions is not None and high > partitions:
            p.append(f"ScaledObject {svc}-consumer: more consumers than {partitions} partitions")

    for name, s in services.items():
        if not any(
            matches(s["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
            for d in deployments.values()
        ):
            p.append(f"Service {name}: selects no pods")

    deny = [
        n
        for n, pol in policies.items()
        if pol["spec"]["podSelector"] == {}
        and set(pol["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not pol["spec"].get("ingress")
        and not pol["spec"].get("egress")
    ]
    if not deny:
        p.append("no default-deny NetworkPolicy")

    routes = {
        path["path"]: path["backend"]["service"]["name"]
        for ing in of_kind(objects, "Ingress").values()
        for rule in ing["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    for svc in SERVICES:
        backend = next((b for r, b in routes.items() if r.startswith(f"/api/{svc}(")), None)
        if backend != f"{svc}-api" or backend not in services:
            p.append(f"Ingress: /api/{svc}/ does not route to the {svc}-api Service")
    if routes.get("/") != "console" or "console" not in services:
        p.append("Ingress: / does not route to the console Service")
    rewritten = [
        name
        for name, ing in of_kind(objects, "Ingress").items()
        if "nginx.ingress.kubernetes.io/rewrite-target"
        in (ing["metadata"].get("annotations") or {})
        and any(
            path["path"] == "/" for rule in ing["spec"]["rules"] for path in rule["http"]["paths"]
        )
    ]
    if rewritten:
        p.append(f"Ingress {rewritten}: the console's / would be rewritten")
    return p


def quantity(text: str) -> float:
    """A Kubernetes CPU or memory quantity in cores or GiB."""
    units = {"m": 1e-3, "Ki": 2**-20, "Mi": 2**-10, "Gi": 1.0, "Ti": 2**10}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _capacity_problems(name: str, pod_containers: list[Obj]) -> list[str]:
    """A training worker must not advertise more to the scheduler than its limits give it."""
    problems = []
    for c in pod_containers:
        env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
        if "KILN_TRAINING_CAPACITY" not in env:
            continue
        limits = (c.get("resources") or {}).get("limits") or {}
        have = {
            "cpu": quantity(str(limits.get("cpu", "0"))),
            "memory": quantity(str(limits.get("memory", "0"))),
            "gpu": float(limits.get("nvidia.com/gpu", 0)),
        }
        for part in env["KILN_TRAINING_CAPACITY"].split(","):
            key, _, amount = part.partition("=")
            if float(amount) > have.get(key.strip(), 0.0):
                problems.append(f"{name}: advertises {part} but its limits give {have}")
    return problems


def _bootstrap(configmaps: dict[str, Obj]) -> str | None:
    for cm in configmaps.values():
        bus = (cm.get("data") or {}).get("KILN_BUS_URL")
        if bus:
            return urlsplit(bus).netloc
    return None


def _topic_partitions(configmaps: dict[str, Obj]) -> int | None:
    for cm in configmaps.values():
        bus = (cm.get("data") or {}).get("KILN_BUS_URL")
        if bus:
            query = parse_qs(urlsplit(bus).query)
            return int(query.get("partitions", ["3"])[0])
    return None
