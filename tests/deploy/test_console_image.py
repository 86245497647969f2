"""The console image (web/Dockerfile, web/deploy/): its nginx configuration run in a real nginx
over a stand-in build and a stand-in gateway. The page carries the same Content-Security-Policy
and security headers as the embedded gateway's console, with a fresh nonce per response; assets
are cached for good; /api/ reaches the gateway unchanged. Needs nginx (tools/install_nginx.sh)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiln_cli.console import SECURITY_HEADERS, content_security_policy
from tests.deploy.support import REPO, free_port, require_nginx, stand_in_api, start_nginx
from tests.deploy.test_dockerfiles import instructions

WEB = REPO / "web"
DEPLOY = WEB / "deploy"
INDEX = """<!doctype html><html><head>
<meta name="csp-nonce" content="__CSP_NONCE__" />
<script type="module" crossorigin src="/assets/index-abc123.js"></script>
</head><body><div id="root"></div></body></html>
"""


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nginx = require_nginx()
    workdir = tmp_path_factory.mktemp("console-nginx")
    dist = workdir / "html"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "index-abc123.js").write_text("console.log('kiln');\n" * 200)
    gateway = stand_in_api("gateway")
    port = free_port()
    # The image's paths, moved into the work directory; the upstream rendered as the image's
    # entrypoint would render it from KILN_API_UPSTREAM.
    template = (DEPLOY / "kiln-api-upstream.conf.template").read_text()
    assert "${KILN_API_UPSTREAM}" in template
    upstream = template.replace("${KILN_API_UPSTREAM}", f"127.0.0.1:{gateway.server_address[1]}")
    (workdir / "kiln-api-upstream.conf").write_text(upstream)
    text = (DEPLOY / "nginx.conf").read_text()
    assert "listen 8080;" in text and "root /usr/share/nginx/html;" in text
    text = text.replace("/tmp/", f"{workdir}/")
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    text = text.replace("root /usr/share/nginx/html;", f"root {dist};")
    headers = DEPLOY / "kiln-security-headers.conf"
    text = text.replace("/etc/nginx/kiln-security-headers.conf", str(headers))
    if not Path("/etc/nginx/mime.types").is_file():
        types = "types { application/javascript js; text/html html; }"
        text = text.replace("include /etc/nginx/mime.types;", types)
    if os.geteuid() == 0:
        # nginx's workers would drop to "nobody", who cannot read pytest's private temp dirs;
        # the image runs the master unprivileged, so no switch happens there.
        text = "user root;\n" + text
    (workdir / "nginx.conf").write_text(text)
    proc = start_nginx(nginx, workdir, port, "the console configuration")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        gateway.shutdown()


def nonce_of(page: str) -> str:
    found = re.search(r'<meta name="csp-nonce" content="([^"]+)"', page)
    assert found, page
    return found.group(1)


def assert_security_headers(answer: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS:
        assert answer.headers.get(name.decode()) == value.decode(), name


@pytest.mark.parametrize("path", ["/", "/training/runs/j-1", "/datasets?tab=items"])
def test_every_app_path_is_the_page_with_the_gateways_policy_and_a_fresh_nonce(
    console: str, path: str
) -> None:
    first, second = httpx.get(console + path), httpx.get(console + path)
    for answer in (first, second):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["cache-control"] == "no-store"
        assert "__CSP_NONCE__" not in answer.text
        nonce = nonce_of(answer.text)
        assert len(nonce) >= 22  # at least 128 bits
        assert answer.headers["content-security-policy"] == content_security_policy(nonce)
        assert_security_headers(answer)
    assert nonce_of(first.text) != nonce_of(second.text)


def test_assets_are_immutable_and_a_missing_one_is_a_404(console: str) -> None:
    asset = httpx.get(f"{console}/assets/index-abc123.js", headers={"accept-encoding": "gzip"})
    assert asset.status_code == 200
    assert "javascript" in asset.headers["content-type"]
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert asset.headers.get("content-encoding") == "gzip"
    assert "kiln" in asset.text
    assert_security_headers(asset)
    missing = httpx.get(f"{console}/assets/nope.js")
    assert missing.status_code == 404
    assert "<html" not in missing.text.lower() or "csp-nonce" not in missing.text


def test_writes_to_the_page_are_refused_with_allow(console: str) -> None:
    answer = httpx.post(f"{console}/datasets", content=b"x")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, HEAD"


def test_api_calls_reach_the_gateway_unchanged_with_the_token(console: str) -> None:
    raw = "/api/dataset/v1/datasets/d1/items/a%2Fb%20c.png?limit=5&q=%20y"
    answer = httpx.get(console + raw, headers={"Authorization": "Bearer t0k"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["service"] == "gateway"
    assert body["path"] == raw
    assert body["authorization"] == "Bearer t0k"
    assert body["request_id"]
    posted = httpx.post(f"{console}/api/dataset/v1/datasets", content=b"y" * 300_000)
    assert posted.json()["bytes"] == 300_000


def test_the_session_endpoint_asks_for_a_bearer_token(console: str) -> None:
    answer = httpx.get(f"{console}/console/session")
    assert answer.json() == {"mode": "token"}
    assert answer.headers["cache-control"] == "no-store"
    assert httpx.get(f"{console}/healthz").status_code == 200


def test_dockerfile_builds_with_node_then_serves_with_unprivileged_nginx() -> None:
    lines = instructions((WEB / "Dockerfile").read_text())
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) == 2, "a node build stage and an nginx runtime stage"
    build = lines[lines.index(froms[0]) : lines.index(froms[1])]
    assert any(line.startswith("RUN") and "npm ci" in line for line in build)
    assert any(line.startswith("RUN") and "npm run build" in line for line in build)
    runtime = lines[lines.index(froms[1]) :]
    copies = [line for line in runtime if line.startswith("COPY ")]
    assert "COPY --from=build /web/dist /usr/share/nginx/html" in copies
    for line in copies:
        source = line.split()[-2]
        if not line.startswith("COPY --from="):
            assert (WEB / source).is_file(), source
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in line for line in runtime)
    assert any("KILN_API_UPSTREAM=" in line for line in runtime if line.startswith("ENV "))
    ignored = (WEB / ".dockerignore").read_text().split()
    assert "node_modules" in ignored and "dist" in ignored
