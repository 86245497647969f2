"""compose/docker-compose.yml against the Compose Specification, and what Kiln needs of it."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import pytest
import yaml

from kiln_core.settings import Settings
from tests.deploy.support import PORTS, REPO, SCHEMAS, SERVICES, WORKER_SERVICES, load_json

COMPOSE = REPO / "compose" / "docker-compose.yml"
KILN_IMAGE = re.compile(r"^kiln/(?P<svc>[a-z]+):")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = load_json(SCHEMAS / "compose-spec.json")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def errors_of(validator: jsonschema.protocols.Validator, document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    assert errors_of(validator, compose) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["services"]["kafka"].update(helthcheck={"test": ["CMD", "true"]}),
        lambda c: c["services"]["gateway"]["depends_on"]["dataset-api"].update(condition="up"),
        lambda c: c["services"]["postgres"].update(ports="5432:5432"),
        lambda c: c["services"]["redis"]["healthcheck"].update(retries="many"),
    ],
    ids=["misspelt-key", "bad-depends-on-condition", "ports-not-a-list", "retries-not-a-number"],
)
def test_a_broken_compose_file_is_rejected(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator, breakage: Any
) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert errors_of(validator, broken) != []


def test_every_service_runs_its_api_consumer_worker_and_migration(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for svc in SERVICES:
        assert services[f"{svc}-api"]["command"][:2] == ["serve", svc]
        assert "--port" in services[f"{svc}-api"]["command"]
        assert str(PORTS[svc]) in services[f"{svc}-api"]["command"]
        assert services[f"{svc}-consumer"]["command"] == ["consume", svc]
        assert services[f"{svc}-migrate"]["command"] == ["migrate", svc]
        assert services[f"{svc}-migrate"]["restart"] == "no"
        if svc in WORKER_SERVICES:
            assert services[f"{svc}-worker"]["command"][:2] == ["worker", svc]
        else:
            assert f"{svc}-worker" not in services
        for role in ("api", "consumer", "worker", "migrate"):
            spec = services.get(f"{svc}-{role}")
            if spec is None:
                continue
            assert spec["build"]["dockerfile"] == f"services/{svc}/Dockerfile"
            assert (
                REPO / "compose" / spec["build"]["context"] / spec["build"]["dockerfile"]
            ).is_file()
            assert KILN_IMAGE.match(spec["image"]), spec["image"]
            if role != "migrate":
                wait = spec["depends_on"][f"{svc}-migrate"]["condition"]
                assert wait == "service_completed_successfully"


def test_infrastructure_uses_pinned_official_images(compose: dict[str, Any]) -> None:
    expected = {
        "kafka": "apache/kafka:",
        "postgres": "postgres:",
        "minio": "minio/minio:",
        "redis": "redis:",
        "triton": "nvcr.io/nvidia/tritonserver:",
        "otel-collector": "otel/opentelemetry-collector-contrib:",
        "jaeger": "jaegertracing/all-in-one:",
        "prometheus": "prom/prometheus:",
        "gateway": "nginx:",
    }
    for name, prefix in expected.items():
        image = compose["services"][name]["image"]
        assert image.startswith(prefix), image
        assert not image.endswith(":latest")
    triton = compose["services"]["triton"]["command"]
    assert "--model-control-mode=explicit" in triton
    kafka = compose["services"]["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper


def test_depends_on_targets_exist_and_are_checkable(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in services.items():
        for target, cond in (spec.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if cond["condition"] == "service_healthy":
                target_spec = services[target]
                own = target_spec.get("healthcheck")
                # Kiln images carry a HEALTHCHECK in their Dockerfile.
                has_check = (own and not own.get("disable")) or KILN_IMAGE.match(
                    target_spec.get("image", "")
                )
                assert has_check, f"{name} waits for {target} to be healthy, but it has no check"


def test_long_running_containers_have_health_checks_and_volumes_are_declared(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    declared = set(compose["volumes"])
    for name, spec in services.items():
        one_shot = spec.get("restart") == "no"
        if not one_shot and not KILN_IMAGE.match(spec["image"]) and name != "otel-collector":
            assert "healthcheck" in spec, f"{name} has no health check"
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith("."):
                assert source in declared, f"{name} mounts undeclared volume {source}"
            else:
                assert (REPO / "compose" / source).exists(), f"{name} mounts missing {source}"


def test_kiln_processes_get_every_setting_they_need(compose: dict[str, Any]) -> None:
    env = compose["x-kiln-env"]
    fields = {f"KILN_{name.upper()}" for name in Settings.model_fields}
    for key in env:
        if key.startswith("KILN_") and key not in ("KILN_TRACE_EXPORTER",):
            assert key in fields, f"{key} is not a Kiln setting"
    for needed in ("database_url", "bus_url", "storage_url", "celery_broker_url", "triton_url"):
        assert f"KILN_{needed.upper()}" in env
    assert env["KILN_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["KILN_BUS_URL"].startswith("kafka://kafka:9092")
    assert env["KILN_STORAGE_URL"].startswith("s3://")
    assert env["KILN_AUTH_REQUIRED"] == "true"


def test_gateway_routes_every_api_and_passes_authorization(compose: dict[str, Any]) -> None:
    conf = (REPO / "compose" / "gateway" / "nginx.conf").read_text()
    assert "client_max_body_size" in conf
    assert "limit_req_zone" in conf and "limit_req " in conf
    assert "proxy_set_header Authorization $http_authorization" in conf
    # nginx takes the first matching regex location: the metrics block must come first.
    assert conf.index("location ~ ^/api/[^/]+/metrics$") < conf.index("location ~ ^/api/(?<svc>")
    for svc in SERVICES:
        assert f"set $kiln_upstream {svc}-api:{PORTS[svc]};" in conf
        assert svc in re.search(r"location ~ \^/api/\(\?<svc>([^)]*)\)", conf).group(1)  # type: ignore[union-attr]
    prometheus = yaml.safe_load((REPO / "compose" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for group in job["static_configs"]
        for t in group["targets"]
    }
    for svc in SERVICES:
        assert f"{svc}-api:{PORTS[svc]}" in targets
        assert f"{svc}-api" in compose["services"]


def test_console_image_serves_the_web_build_and_reaches_the_gateway(
    compose: dict[str, Any],
) -> None:
    console = compose["services"]["console"]
    assert KILN_IMAGE.match(console["image"])
    dockerfile = REPO / "compose" / console["build"]["context"] / console["build"]["dockerfile"]
    assert dockerfile == REPO / "compose" / ".." / "web" / "Dockerfile" and dockerfile.is_file()
    assert console["depends_on"]["gateway"]["condition"] == "service_healthy"
    gateway_port = compose["services"]["gateway"]["ports"][0].split(":")[-1]
    assert console["environment"]["KILN_API_UPSTREAM"] == f"gateway:{gateway_port}"
    # nginx runs unprivileged on 8080 inside; only /tmp is writable.
    assert any(p.endswith(":8080") for p in console["ports"])
    assert console["read_only"] is True and "/tmp" in console["tmpfs"]
