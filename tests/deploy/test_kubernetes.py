"""k8s/: every Kustomize target renders, every object matches the Kubernetes 1.32 (or KEDA)
schema, and the whole gives each service what it needs. Needs the pinned kustomize
(tools/install_kustomize.sh); in CI a missing binary fails the tests."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import k8s_checks
from tests.deploy.k8s_checks import K8S, TARGETS, Obj, build, kiln_problems, schema_errors
from tests.deploy.support import REPO, missing_tool


@pytest.fixture(scope="module")
def kustomize() -> str:
    found = k8s_checks.find_kustomize()
    if found is None:
        # The install script is idempotent and pinned; building needs Go and the module proxy.
        done = subprocess.run(
            [str(REPO / "tools" / "install_kustomize.sh")],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        found = k8s_checks.find_kustomize()
        if found is None:
            missing_tool(f"kustomize is not installed (tools/install_kustomize.sh: {done.stderr})")
    return found


@pytest.fixture(scope="module")
def rendered(kustomize: str) -> dict[str, list[Obj]]:
    return {target: build(kustomize, K8S / target) for target in TARGETS}


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_base_services_are_rendered_from_the_current_table() -> None:
    import sys

    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "render_k8s_base.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"run python tools/render_k8s_base.py\n{done.stdout}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_rendered_object_matches_its_schema(
    rendered: dict[str, list[Obj]], target: str
) -> None:
    objects = rendered[target]
    assert len(objects) > 50
    assert schema_errors(objects) == []


@pytest.mark.parametrize("target", TARGETS)
def test_every_process_has_probes_resources_scaling_and_budgets(
    rendered: dict[str, list[Obj]], target: str
) -> None:
    assert kiln_problems(rendered[target], overlay=target != "base") == []


def test_overlays_change_replicas_resources_and_images(rendered: dict[str, list[Obj]]) -> None:
    dev, prod = rendered["overlays/dev"], rendered["overlays/prod"]
    assert find(dev, "Deployment", "dataset-api")["spec"]["replicas"] == 1
    assert find(prod, "Deployment", "dataset-api")["spec"]["replicas"] == 3
    assert find(prod, "HorizontalPodAutoscaler", "serving-api")["spec"]["minReplicas"] == 3
    for objects, namespace in ((dev, "kiln-dev"), (prod, "kiln")):
        namespaced = [o for o in objects if o["kind"] != "Namespace"]
        assert {o["metadata"].get("namespace") for o in namespaced} == {namespace}
    dev_req = find(dev, "Deployment", "training-worker")["spec"]["template"]["spec"]
    prod_req = find(prod, "Deployment", "training-worker")["spec"]["template"]["spec"]
    assert dev_req["containers"][0]["resources"] != prod_req["containers"][0]["resources"]
    for obj in prod:
        if obj["kind"] == "Deployment":
            for c in k8s_checks.containers(obj):
                assert ":" in c["image"] and not c["image"].endswith(":latest"), c["image"]
    dev_images = {
        c["image"] for o in dev if o["kind"] == "Deployment" for c in k8s_checks.containers(o)
    }
    assert "localhost:5000/kiln/dataset:dev" in dev_images
    # dev secrets are generated (hashed name); prod keeps placeholders for the pipeline.
    assert any(
        o["metadata"]["name"].startswith("kiln-secrets-") for o in dev if o["kind"] == "Secret"
    )
    prod_secret = find(prod, "Secret", "kiln-secrets")
    assert all("REPLACE_ME" in v for v in prod_secret["stringData"].values())


@pytest.mark.parametrize("target", TARGETS)
def test_serving_api_pods_carry_their_own_triton_in_explicit_mode(
    rendered: dict[str, list[Obj]], target: str
) -> None:
    pod = find(rendered[target], "Deployment", "serving-api")["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == ["api", "triton"]
    assert "--model-control-mode=explicit" in pod["containers"][1]["args"]
    config = next(
        o
        for o in rendered[target]
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("kiln-config")
    )
    assert config["data"]["KILN_TRITON_URL"] == "grpc://127.0.0.1:8001"


def test_kubernetes_sets_every_setting_compose_sets(rendered: dict[str, list[Obj]]) -> None:
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
    wanted = {k for k in compose["x-kiln-env"] if k.startswith(("KILN_", "OTEL_"))}
    for target in ("overlays/dev", "overlays/prod"):
        objects = rendered[target]
        given: set[str] = set()
        for obj in objects:
            if obj["kind"] in ("ConfigMap", "Secret"):
                given |= set(obj.get("data") or {}) | set(obj.get("stringData") or {})
        assert wanted <= given, f"{target} lacks {sorted(wanted - given)}"


BREAKAGES: list[tuple[str, Any]] = [
    (
        "misspelt-field",
        lambda objs: find(objs, "Deployment", "dataset-api")["spec"].update(replica=3),
    ),
    (
        "port-not-a-number",
        lambda objs: find(objs, "Deployment", "serving-api")["spec"]["template"]["spec"][
            "containers"
        ][0]["ports"][0].update(containerPort="http"),
    ),
    (
        "hpa-without-max",
        lambda objs: find(objs, "HorizontalPodAutoscaler", "training-api")["spec"].pop(
            "maxReplicas"
        ),
    ),
    (
        "keda-kafka-without-group",
        lambda objs: find(objs, "ScaledObject", "registry-consumer")["spec"]["triggers"][0][
            "metadata"
        ].pop("consumerGroup"),
    ),
    (
        "unknown-kind",
        lambda objs: objs.append(
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
        ),
    ),
]


@pytest.mark.parametrize("breakage", [b for _, b in BREAKAGES], ids=[i for i, _ in BREAKAGES])
def test_a_broken_manifest_fails_schema_validation(
    rendered: dict[str, list[Obj]], breakage: Any
) -> None:
    objects = copy.deepcopy(rendered["overlays/prod"])
    breakage(objects)
    assert schema_errors(objects) != []


def test_a_deployment_without_readiness_or_budget_is_reported(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = copy.deepcopy(rendered["overlays/prod"])
    api = find(objects, "Deployment", "annotation-api")
    api["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    objects.remove(find(objects, "PodDisruptionBudget", "annotation-consumer"))
    problems = kiln_problems(objects, overlay=True)
    assert any("annotation-api: liveness must be /healthz" in p for p in problems)
    assert any("annotation-consumer: no PodDisruptionBudget" in p for p in problems)


def test_a_scaler_watching_another_kafka_is_reported(rendered: dict[str, list[Obj]]) -> None:
    objects = copy.deepcopy(rendered["overlays/dev"])
    scaler = find(objects, "ScaledObject", "serving-consumer")
    scaler["spec"]["triggers"][0]["metadata"]["bootstrapServers"] = "elsewhere:9092"
    problems = kiln_problems(objects, overlay=True)
    assert any("serving-consumer: watches a different Kafka" in p for p in problems)


def test_a_worker_advertising_more_than_its_limits_is_reported(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = copy.deepcopy(rendered["overlays/prod"])
    worker = find(objects, "Deployment", "training-worker")["spec"]["template"]["spec"]
    worker["containers"][0]["resources"]["limits"]["cpu"] = "2"
    problems = kiln_problems(objects, overlay=True)
    assert any("training-worker: advertises cpu=8" in p for p in problems)


def test_a_broken_kustomization_fails_to_build(kustomize: str, tmp_path: Path) -> None:
    overlay = tmp_path / "broken"
    shutil.copytree(K8S / "overlays" / "dev", overlay)
    (overlay / "kustomization.yaml").write_text(
        (overlay / "kustomization.yaml")
        .read_text()
        .replace("../../base", str(K8S / "base"))
        .replace("path: /spec/maxReplicaCount", "path: /spec/noSuchField/deeper")
    )
    with pytest.raises(RuntimeError, match="kustomize build"):
        build(kustomize, overlay)


def test_the_console_is_served_at_the_root_with_its_own_image(
    rendered: dict[str, list[Obj]],
) -> None:
    for target in TARGETS:
        console = find(rendered[target], "Deployment", "console")
        (container,) = console["spec"]["template"]["spec"]["containers"]
        assert container["image"].split("/")[-1].split(":")[0] == "console"
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["KILN_API_UPSTREAM"].endswith(":80")
        policy = find(rendered[target], "NetworkPolicy", "console-from-and-to-ingress")
        assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == (
            "kiln-console"
        )
    image = k8s_checks.containers(find(rendered["overlays/prod"], "Deployment", "console"))
    assert next(image)["image"] == "registry.example.com/kiln/console:0.1.0"


def test_a_console_without_its_root_route_or_read_only_root_is_reported(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = copy.deepcopy(rendered["overlays/prod"])
    objects.remove(find(objects, "Ingress", "kiln-console"))
    container = find(objects, "Deployment", "console")["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    problems = kiln_problems(objects, overlay=True)
    assert "Ingress: / does not route to the console Service" in problems
    assert "console: root filesystem is writable" in problems
