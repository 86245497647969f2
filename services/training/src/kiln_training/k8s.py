"""The Kubernetes executor: a training job as a Kubeflow ``PyTorchJob`` (kubeflow.org/v1).

For clusters that run the Kubeflow Training Operator: one ``Master`` replica and
``world_size - 1`` ``Worker`` replicas running ``python -m kiln_training run-job <job id>`` (the
same run a Celery worker does), resources from the job's request, configuration from the
platform's ConfigMap and Secret. Today the Master runs the whole job (the runtime's
data-parallel mode starts its ranks as local processes); Worker replicas are rendered for the
operator's multi-node layout but do not yet join the run. The manifest is checked against
``crds/pytorchjob.schema.json`` (see its description for where the structure comes from).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from kiln_training.models import TrainingJob

SCHEMA_PATH = Path(__file__).parent / "crds" / "pytorchjob.schema.json"
_NAME_CHARS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how training pods run."""

    image: str = "kiln/training:latest"
    namespace: str = "kiln"
    config_map: str = "kiln-config"
    secret: str = "kiln-secrets"
    service_account: str = "kiln-training"
    # Extra pod labels, e.g. for a Kueue queue or cost accounting.
    labels: dict[str, str] = field(default_factory=dict)
    backoff_limit: int = 3
    ttl_seconds_after_finished: int = 3600


def resource_name(job: TrainingJob) -> str:
    """A DNS-1123 name for the job's PyTorchJob (at most 63 characters)."""
    base = _NAME_CHARS.sub("-", f"kiln-train-{job.id}".lower()).strip("-")
    return base[:63].rstrip("-")


def _quantities(resources: dict[str, float]) -> dict[str, str]:
    out: dict[str, str] = {}
    cpu = float(resources.get("cpu", 0))
    if cpu > 0:
        out["cpu"] = f"{math.ceil(cpu * 1000)}m"
    memory = float(resources.get("memory", 0))
    if memory > 0:
        out["memory"] = f"{math.ceil(memory * 1024)}Mi"
    gpu = float(resources.get("gpu", 0))
    if gpu > 0:
        out["nvidia.com/gpu"] = str(int(gpu))
    return out


def _container(job: TrainingJob, config: ClusterConfig) -> dict[str, Any]:
    per_replica = _quantities(job.resources)
    return {
        "name": "pytorch",  # the operator finds the training container by this name
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "kiln_training"],
        "args": ["run-job", job.id],
        "envFrom": [
            {"configMapRef": {"name": config.config_map}},
            {"secretRef": {"name": config.secret}},
        ],
        "env": [
            {"name": "KILN_SERVICE", "value": "training"},
            {"name": "KILN_TRAINING_JOB_ID", "value": job.id},
            {"name": "KILN_TRAINING_POOL", "value": job.pool},
            {
                "name": "KILN_POD_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
        ],
        "resources": {"requests": per_replica, "limits": per_replica},
    }


def _replica(job: TrainingJob, config: ClusterConfig, replicas: int) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": "kiln-training",
        "app.kubernetes.io/component": "training-run",
        "app.kubernetes.io/part-of": "kiln",
        "kiln.dev/job-id": job.id,
        "kiln.dev/team": _NAME_CHARS.sub("-", job.team.lower())[:63].strip("-") or "team",
        **config.labels,
    }
    return {
        "replicas": replicas,
        # The run resumes from its checkpoint, so a failed pod may simply start again.
        "restartPolicy": "OnFailure",
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": config.service_account,
                "automountServiceAccountToken": False,
                "containers": [_container(job, config)],
            },
        },
    }


def render_pytorchjob(job: TrainingJob, config: ClusterConfig | None = None) -> dict[str, Any]:
    """The job as a ``PyTorchJob`` manifest: a Master plus ``world_size - 1`` Workers."""
    config = config or ClusterConfig()
    specs: dict[str, Any] = {"Master": _replica(job, config, 1)}
    if job.world_size > 1:
        specs["Worker"] = _replica(job, config, job.world_size - 1)
    run_policy: dict[str, Any] = {
        "cleanPodPolicy": "Running",
        "backoffLimit": config.backoff_limit,
        "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
    }
    if job.time_budget_s:
        # The run stops itself at its budget; the deadline only catches a run that hangs.
        run_policy["activeDeadlineSeconds"] = int(job.time_budget_s * 2) + 600
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": resource_name(job),
            "namespace": config.namespace,
            "labels": {"app.kubernetes.io/part-of": "kiln", "kiln.dev/job-id": job.id},
            "annotations": {
                "kiln.dev/template": job.template,
                "kiln.dev/dataset": f"{job.dataset_id}@{job.dataset_version}",
            },
        },
        "spec": {"pytorchReplicaSpecs": specs, "runPolicy": run_policy},
    }


@lru_cache(maxsize=1)
def pytorchjob_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def validate_pytorchjob(manifest: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``manifest`` fits the PyTorchJob CRD."""
    import jsonschema

    jsonschema.Draft202012Validator(pytorchjob_schema()).validate(manifest)


def render_yaml(job: TrainingJob, config: ClusterConfig | None = None) -> str:
    """The validated manifest as YAML, for ``kubectl apply -f -``."""
    import yaml

    manifest = render_pytorchjob(job, config)
    validate_pytorchjob(manifest)
    return str(yaml.safe_dump(manifest, sort_keys=False))
