"""Render ``k8s/base/services/<service>.yaml``: each service's API, consumer and worker objects.

Every service needs the same shape (Deployment, Service, HPA, KEDA ScaledObject, PDB,
ServiceAccount) with its own name, port, commands and sizes; writing them from one table keeps
the five files consistent. The output is committed and plain Kustomize input; the deployment
tests fail when it is stale, and ``python tools/render_k8s_base.py`` brings it up to date.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "k8s" / "base" / "services"

# Partitions of each kiln.* topic (KILN_BUS_URL ?partitions=); more consumers than partitions idle.
TOPIC_PARTITIONS = 6
POOL_LABEL = "kiln.dev/pool"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
KAFKA_BOOTSTRAP = "kafka.kiln-infra.svc.cluster.local:9092"


@dataclass(frozen=True)
class Sizes:
    """Requests and limits of one process: cpu, memory."""

    requests: tuple[str, str]
    limits: tuple[str, str]


@dataclass(frozen=True)
class ServiceShape:
    name: str
    port: int
    worker: Sizes | None
    worker_concurrency: int = 2
    worker_grace_s: int = 120
    worker_env: tuple[tuple[str, str], ...] = ()
    api: Sizes = Sizes(("250m", "512Mi"), ("1", "1536Mi"))
    consumer: Sizes = Sizes(("100m", "384Mi"), ("500m", "1Gi"))
    triton: Sizes | None = None  # a Triton sidecar next to each API process


SERVICES = (
    ServiceShape("dataset", 8101, Sizes(("500m", "1Gi"), ("2", "4Gi"))),
    # Pre-labelling asks the serving API for suggestions (KILN_SERVING_URL in kiln-config).
    ServiceShape("annotation", 8102, Sizes(("250m", "512Mi"), ("1", "2Gi"))),
    # A training run checkpoints; give it time to finish its step and checkpoint on SIGTERM.
    ServiceShape(
        "training",
        8103,
        Sizes(("1", "2Gi"), ("4", "8Gi")),
        worker_concurrency=1,
        worker_grace_s=600,
        # A container sees the node's cores; advertise the pod's limits to the scheduler instead.
        worker_env=(("KILN_TRAINING_POOL", "cpu"), ("KILN_TRAINING_CAPACITY", "cpu=4,memory=8")),
    ),
    ServiceShape("registry", 8104, Sizes(("500m", "1Gi"), ("2", "4Gi")), worker_concurrency=1),
    # Each serving API process loads its models into its own Triton (explicit model control
    # over localhost): Triton replicas behind one Service would each hold different models.
    ServiceShape(
        "serving",
        8105,
        None,
        api=Sizes(("500m", "1Gi"), ("2", "2Gi")),
        triton=Sizes(("1", "2Gi"), ("4", "8Gi")),
    ),
)

# The event process and the worker serve /metrics, /healthz and /readyz on the API's port plus
# these (kiln_cli.services.PROBE_PORT_OFFSETS): the consumer's readiness checks its database, Kafka
# and store, the worker's its Celery broker.
PROBE_PORT_OFFSETS = {"consumer": 100, "worker": 200}


def labels(svc: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": f"kiln-{svc}",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "kiln",
    }


def selector(svc: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": f"kiln-{svc}", "app.kubernetes.io/component": component}


def resources(sizes: Sizes) -> dict[str, Any]:
    return {
        "requests": {"cpu": sizes.requests[0], "memory": sizes.requests[1]},
        "limits": {"cpu": sizes.limits[0], "memory": sizes.limits[1]},
    }


CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "capabilities": {"drop": ["ALL"]},
}


def kiln_container(svc: str, name: str, args: list[str], sizes: Sizes) -> dict[str, Any]:
    return {
        "name": name,
        "image": f"kiln/{svc}",
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "envFrom": [
            {"configMapRef": {"name": "kiln-config"}},
            {"secretRef": {"name": "kiln-secrets"}},
        ],
        "env": [{"name": "KILN_SERVICE", "value": svc}],
        "resources": resources(sizes),
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "kiln-home", "mountPath": "/var/lib/kiln"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def pod_spec(svc: str, containers: list[dict[str, Any]], grace_s: int = 30) -> dict[str, Any]:
    return {
        "serviceAccountName": f"kiln-{svc}",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": grace_s,
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": [
            {"name": "kiln-home", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }


def deployment(
    svc: str,
    component: str,
    spec: dict[str, Any],
    replicas: int | None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector(svc, component)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": labels(svc, component),
                **({"annotations": annotations} if annotations else {}),
            },
            "spec": spec,
        },
    }
    if replicas is not None:
        body = {"replicas": replicas, **body}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{svc}-{component}", "labels": labels(svc, component)},
        "spec": body,
    }


def http_probe(
    path: str, period: int, failures: int, initial: int = 0, port: str = "http"
) -> dict[str, Any]:
    probe: dict[str, Any] = {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }
    if initial:
        probe["initialDelaySeconds"] = initial
    return probe


def api_objects(s: ServiceShape) -> list[dict[str, Any]]:
    api = kiln_container(
        s.name, "api", ["serve", s.name, "--host", "0.0.0.0", "--port", str(s.port)], s.api
    )
    api["ports"] = [{"name": "http", "containerPort": s.port, "protocol": "TCP"}]
    api["startupProbe"] = http_probe("/healthz", 5, 24)
    api["livenessProbe"] = http_probe("/healthz", 10, 3)
    api["readinessProbe"] = http_probe("/readyz", 5, 3)
    # The schema migration runs before the API starts (advisory-locked, so replicas may race).
    migrate = kiln_container(s.name, "migrate", ["migrate", s.name], s.consumer)
    spec = pod_spec(s.name, [api] + ([triton_sidecar(s.triton)] if s.triton else []))
    spec["initContainers"] = [migrate]
    if s.triton:
        spec["volumes"].append(
            # Triton's Python backend passes tensors through shared memory.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
        )
        spec["volumes"].append({"name": "triton-models", "emptyDir": {}})
    return [
        deployment(s.name, "api", spec, 2, scraped(s.port)),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{s.name}-api", "labels": labels(s.name, "api")},
            "spec": {
                "type": "ClusterIP",
                "selector": selector(s.name, "api"),
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        },
        hpa(s.name, "api", 2, 10, 70),
        pdb(s.name, "api", {"minAvailable": 1}),
    ]


def triton_sidecar(sizes: Sizes) -> dict[str, Any]:
    """Triton in explicit model-control mode; the API loads models through its gRPC port."""
    probe = {"httpGet": {"path": "/v2/health/live", "port": "triton-http"}}
    return {
        "name": "triton",
        "image": TRITON_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "tritonserver",
            "--model-repository=/models",
            "--model-control-mode=explicit",
            "--strict-readiness=false",
            "--log-info=false",
        ],
        "ports": [
            {"name": "triton-http", "containerPort": 8000, "protocol": "TCP"},
            {"name": "triton-grpc", "containerPort": 8001, "protocol": "TCP"},
            {"name": "triton-metrics", "containerPort": 8002, "protocol": "TCP"},
        ],
        "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "resources": resources(sizes),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "triton-models", "mountPath": "/models"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }


def scraped(port: int) -> dict[str, str]:
    """The pod annotations Prometheus's Kubernetes discovery reads."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def with_probes(container: dict[str, Any], port: int, period: int) -> dict[str, Any]:
    """An event or worker process's own /metrics, /healthz and /readyz port and probes."""
    container["ports"] = [{"name": "probes", "containerPort": port, "protocol": "TCP"}]
    container["livenessProbe"] = http_probe("/healthz", period, 3, 30, port="probes")
    container["readinessProbe"] = http_probe("/readyz", period, 3, port="probes")
    return container


def consumer_objects(s: ServiceShape) -> list[dict[str, Any]]:
    port = s.port + PROBE_PORT_OFFSETS["consumer"]
    consumer = kiln_container(s.name, "consumer", ["consume", s.name], s.consumer)
    with_probes(consumer, port, 20)
    # Replicas belong to KEDA (it drives an HPA from the group's lag), so none are set here.
    spec = pod_spec(s.name, [consumer], grace_s=60)
    return [
        deployment(s.name, "consumer", spec, None, scraped(port)),
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": f"{s.name}-consumer", "labels": labels(s.name, "consumer")},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": f"{s.name}-consumer",
                },
                "pollingInterval": 15,
                "cooldownPeriod": 300,
                "minReplicaCount": 1,
                # A consumer beyond the partition count would sit idle in the group.
                "maxReplicaCount": TOPIC_PARTITIONS,
                "fallback": {"failureThreshold": 3, "replicas": 2},
                "triggers": [
                    {
                        "type": "kafka",
                        "metadata": {
                            "bootstrapServers": KAFKA_BOOTSTRAP,
                            "consumerGroup": f"kiln-{s.name}",
                            "lagThreshold": "100",
                            "activationLagThreshold": "10",
                            "offsetResetPolicy": "earliest",
                            "allowIdleConsumers": "false",
                        },
                    }
                ],
            },
        },
        pdb(s.name, "consumer", {"maxUnavailable": 1}),
    ]


def worker_objects(s: ServiceShape) -> list[dict[str, Any]]:
    assert s.worker is not None
    worker = kiln_container(
        s.name, "worker", ["worker", s.name, "--concurrency", str(s.worker_concurrency)], s.worker
    )
    worker["env"] += [{"name": k, "value": v} for k, v in s.worker_env]
    port = s.port + PROBE_PORT_OFFSETS["worker"]
    with_probes(worker, port, 30)
    spec = pod_spec(s.name, [worker], grace_s=s.worker_grace_s)
    workload = deployment(s.name, "worker", spec, 1, scraped(port))
    budget = pdb(s.name, "worker", {"maxUnavailable": 1})
    pool = dict(s.worker_env).get("KILN_TRAINING_POOL")
    if pool:
        # Each resource pool runs its own worker Deployment; the pool label keeps them apart.
        workload["spec"]["template"]["metadata"]["labels"][POOL_LABEL] = pool
        workload["spec"]["selector"]["matchLabels"][POOL_LABEL] = pool
        budget["spec"]["selector"]["matchLabels"][POOL_LABEL] = pool
    return [workload, hpa(s.name, "worker", 1, 8, 75), budget]


def hpa(svc: str, component: str, low: int, high: int, cpu_percent: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{svc}-{component}", "labels": labels(svc, component)},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": f"{svc}-{component}",
            },
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": cpu_percent},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def pdb(svc: str, component: str, budget: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{svc}-{component}", "labels": labels(svc, component)},
        "spec": {**budget, "selector": {"matchLabels": selector(svc, component)}},
    }


def service_account(svc: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": f"kiln-{svc}",
            "labels": {
                "app.kubernetes.io/name": f"kiln-{svc}",
                "app.kubernetes.io/part-of": "kiln",
            },
        },
        "automountServiceAccountToken": False,
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-objects out in full: Kubernetes readers expect no YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(s: ServiceShape) -> str:
    objects = [service_account(s.name), *api_objects(s), *consumer_objects(s)]
    if s.worker is not None:
        objects += worker_objects(s)
    header = (
        f"# The {s.name} service: API, event consumer"
        + (" and Celery worker" if s.worker else "")
        + ".\n# Generated by tools/render_k8s_base.py; edit that table, not this file.\n"
    )
    return header + yaml.dump_all(objects, Dumper=_PlainDumper, sort_keys=False, width=100)


def main() -> int:
    parser = argparse.ArgumentParser(description="Render k8s/base/services/*.yaml")
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args()
    stale = []
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for s in SERVICES:
        path = OUT_DIR / f"{s.name}.yaml"
        text = render(s)
        if not path.is_file() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'} {path.relative_to(REPO)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
