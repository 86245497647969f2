"""Rendered Kubeflow PyTorchJob manifests validate against the CRD's schema."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml

from kiln_training.k8s import (
    ClusterConfig,
    render_pytorchjob,
    render_yaml,
    resource_name,
    validate_pytorchjob,
)
from kiln_training.models import TrainingJob


def job(**extra: Any) -> TrainingJob:
    fields: dict[str, Any] = {
        "team": "Vision Team",
        "model_name": "parts-cnn",
        "dataset_id": "d" * 32,
        "dataset_version": 3,
        "dataset_version_id": "v" * 32,
        "manifest_key": "manifests/x.jsonl",
        "template": "image-cnn",
        "params": {"epochs": 2},
        "resources": {"cpu": 1.5, "memory": 2, "gpu": 0},
        **extra,
    }
    return TrainingJob(**fields)


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_replicas_follow_world_size_and_the_manifest_fits_the_crd(world_size: int) -> None:
    manifest = render_pytorchjob(job(world_size=world_size))
    validate_pytorchjob(manifest)
    specs = manifest["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1
    if world_size == 1:
        assert "Worker" not in specs
    else:
        assert specs["Worker"]["replicas"] == world_size - 1
    container = specs["Master"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch"
    assert container["resources"]["requests"] == {"cpu": "1500m", "memory": "2048Mi"}
    assert {"configMapRef": {"name": "kiln-config"}} in container["envFrom"]
    assert {"secretRef": {"name": "kiln-secrets"}} in container["envFrom"]


def test_gpu_jobs_request_devices_and_names_are_dns_safe() -> None:
    rendered = render_pytorchjob(
        job(resources={"cpu": 4, "memory": 16, "gpu": 2}, pool="gpu", time_budget_s=60),
        ClusterConfig(image="registry.local/kiln/training:1.2", namespace="ml"),
    )
    validate_pytorchjob(rendered)
    container = rendered["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][
        0
    ]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert rendered["spec"]["runPolicy"]["activeDeadlineSeconds"] > 60
    name = resource_name(job())
    assert len(name) <= 63 and name == name.lower()
    one = job()
    assert yaml.safe_load(render_yaml(one)) == render_pytorchjob(one)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda m: m.update(apiVersion="kubeflow.org/v2"),
        lambda m: m["spec"]["pytorchReplicaSpecs"].update(
            Chief=m["spec"]["pytorchReplicaSpecs"]["Master"]
        ),
        lambda m: m["spec"]["pytorchReplicaSpecs"]["Master"].update(restartPolicy="Sometimes"),
        lambda m: m["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"].update(
            containers=[]
        ),
        lambda m: m["spec"]["runPolicy"].update(cleanPodPolicy="Some"),
        lambda m: m["metadata"].update(name="Not_A_DNS_Name"),
        lambda m: m["spec"].pop("pytorchReplicaSpecs"),
        lambda m: m["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
            "resources"
        ]["limits"].update(cpu="lots"),
    ],
)
def test_the_schema_rejects_manifests_the_operator_would_refuse(break_it: object) -> None:
    manifest = copy.deepcopy(render_pytorchjob(job()))
    break_it(manifest)  # type: ignore[operator]
    with pytest.raises(jsonschema.ValidationError):
        validate_pytorchjob(manifest)
