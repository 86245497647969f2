"""The compose gateway (compose/gateway/nginx.conf) run in a real nginx against stand-in APIs:
routing, Authorization passed through, raw paths kept, metrics hidden, body size and rate
limits. Needs nginx (tools/install_nginx.sh); in CI a missing binary fails the tests."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.deploy.support import (
    PORTS,
    REPO,
    SERVICES,
    free_port,
    require_nginx,
    stand_in_api,
    start_nginx,
)

CONF = REPO / "compose" / "gateway" / "nginx.conf"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nginx = require_nginx()
    text = CONF.read_text()
    assert "client_max_body_size 64m;" in text
    apis = {svc: stand_in_api(svc) for svc in SERVICES}
    port = free_port()
    workdir = tmp_path_factory.mktemp("nginx")
    # Same configuration, pointed at the stand-ins: local ports instead of compose hostnames,
    # no Docker DNS, and a 1 MiB body limit so the test need not send 64 MiB.
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    text = re.sub(r"resolver [^;]*;", "", text)
    text = text.replace("pid /tmp/nginx.pid;", f"pid {workdir}/nginx.pid;")
    text = text.replace("client_max_body_size 64m;", "client_max_body_size 1m;")
    # A slow rate keeps the limit test deterministic on a busy machine.
    assert "rate=50r/s" in text and "burst=100 nodelay" in text
    text = text.replace("rate=50r/s", "rate=2r/s").replace("burst=100 nodelay", "burst=20 nodelay")
    assert "rate=20r/s" in text and "burst=40 nodelay" in text
    text = text.replace("rate=20r/s", "rate=1r/s").replace("burst=40 nodelay", "burst=5 nodelay")
    for svc, server in apis.items():
        text = text.replace(f"{svc}-api:{PORTS[svc]}", f"127.0.0.1:{server.server_address[1]}")
    for sub in TEMP_DIRS:
        (workdir / sub).mkdir()
    # Temporary files inside the work directory, not the distribution's /var/lib/nginx.
    temp_paths = "".join(f"\n    {d}_temp_path {workdir}/{d};" for d in TEMP_DIRS)
    text = text.replace("http {", "http {" + temp_paths, 1)
    (workdir / "nginx.conf").write_text(text)
    proc = start_nginx(nginx, workdir, port, "the gateway configuration")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for server in apis.values():
            server.shutdown()


def test_each_service_prefix_reaches_its_api_with_the_token(gateway: str) -> None:
    with httpx.Client(base_url=gateway) as client:
        for svc in SERVICES:
            answer = client.get(f"/api/{svc}/healthz", headers={"Authorization": "Bearer t0k"})
            assert answer.status_code == 200
            body = answer.json()
            assert body["service"] == svc
            assert body["path"] == "/healthz"
            assert body["authorization"] == "Bearer t0k"
            assert body["request_id"]


def test_raw_path_and_query_reach_the_service_unchanged(gateway: str) -> None:
    raw = "/api/dataset/datasets/d1/drafts/x/items/a%2Fb%20c.png?limit=5&q=%20y"
    body = httpx.get(gateway + raw).json()
    assert body["path"] == "/datasets/d1/drafts/x/items/a%2Fb%20c.png?limit=5&q=%20y"


def test_metrics_and_unknown_paths_are_not_exposed(gateway: str) -> None:
    assert httpx.get(f"{gateway}/api/serving/metrics").status_code == 404
    other = httpx.get(f"{gateway}/api/nosuch/thing")
    assert other.status_code == 404
    assert other.headers["content-type"].startswith("application/problem+json")


def test_bodies_over_the_limit_are_refused_and_smaller_ones_pass(gateway: str) -> None:
    assert (
        httpx.post(f"{gateway}/api/dataset/datasets", content=b"x" * 2_000_000).status_code == 413
    )
    small = httpx.post(f"{gateway}/api/dataset/datasets", content=b"x" * 500_000)
    assert small.status_code == 200 and small.json()["bytes"] == 500_000


def test_a_burst_above_the_rate_limit_gets_429(gateway: str) -> None:
    # Limits are per client address: this client comes from its own, so other tests' requests
    # do not count against it.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=gateway, timeout=30, transport=transport) as client:
        codes = Counter(client.get("/api/registry/healthz").status_code for _ in range(40))
    assert codes[200] >= 20  # the burst allowance
    assert codes[429] > 0
    assert set(codes) <= {200, 429}


def test_a_principal_over_its_rate_gets_429_with_retry_after_wherever_it_calls_from(
    gateway: str,
) -> None:
    def calls(address: str, token: str, n: int) -> list[httpx.Response]:
        transport = httpx.HTTPTransport(local_address=address)
        headers = {"authorization": f"Bearer {token}"}
        with httpx.Client(base_url=gateway, timeout=30, transport=transport) as client:
            return [client.get("/api/training/healthz", headers=headers) for _ in range(n)]

    first = calls("127.0.0.3", "token-of-alice", 12)
    codes = Counter(r.status_code for r in first)
    assert codes[200] >= 5 and codes[429] > 0 and set(codes) <= {200, 429}
    refused = next(r for r in first if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    # The same principal from another address is still over its rate; another one is not.
    assert calls("127.0.0.4", "token-of-alice", 1)[0].status_code == 429
    assert calls("127.0.0.4", "token-of-bob", 1)[0].status_code == 200
