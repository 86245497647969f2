"""The Open Inference Protocol (v2) on serving, driven by real peers as their users drive them:
``tritonclient.http`` (in Kiln's environment: nvidia-pytriton depends on it) and the ``kserve``
package's REST client (installed into a peer environment of its own by
tools/install_peer_kserve.sh and run as a subprocess). Both get the model's right answers, a v2
call goes through the endpoint's traffic split (a canary's analysis counts it), and bad input
gets the protocol's ``{"error": "..."}``."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from kiln_client import Kiln
from tests.client.conftest import REPO, RunningKiln, ServedModel
from tests.conftest import IN_CI

pytestmark = pytest.mark.integration


def kserve_python() -> str:
    """The peer environment's python, installed on first use (idempotent, cached)."""
    done = subprocess.run(
        ["bash", str(REPO / "tools" / "install_peer_kserve.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        message = f"the kserve peer did not install:\n{done.stderr[-3000:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return done.stdout.strip().splitlines()[-1]


def samples(served: ServedModel) -> tuple[list[str], list[str]]:
    """Held-out images as base64 strings, and their true classes."""
    files, truth = [], []
    for label in ("dark", "light"):
        for path in sorted((served.images / "val" / label).glob("*.png"))[:3]:
            files.append(base64.b64encode(path.read_bytes()).decode())
            truth.append(label)
    return files, truth


@pytest.fixture(scope="module")
def serving(kiln_up: RunningKiln) -> tuple[str, dict[str, str]]:
    """The serving API's address (as one gives Triton's) and a caller's headers."""
    return (
        f"127.0.0.1:{kiln_up.ports['serving']}",
        {"Authorization": f"Bearer {kiln_up.token('oip-app', 'viewer')}"},
    )


def test_tritonclient_http_gets_the_models_answers(
    served_model: ServedModel, serving: tuple[str, dict[str, str]]
) -> None:
    url, headers = serving
    endpoint = served_model.endpoint
    client = triton_http.InferenceServerClient(url)
    assert client.is_server_live(headers=headers)
    assert client.is_server_ready(headers=headers)
    assert client.is_model_ready(endpoint, headers=headers)
    metadata = client.get_model_metadata(endpoint, headers=headers)
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1, 1]}]
    assert {o["name"] for o in metadata["outputs"]} == {"probabilities", "label"}
    assert metadata["versions"] == [str(served_model.version)]

    images, truth = samples(served_model)
    tensor = triton_http.InferInput("image", [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[i] for i in images], dtype=object), binary_data=False)
    outputs = [
        triton_http.InferRequestedOutput("probabilities", binary_data=False),
        triton_http.InferRequestedOutput("label", binary_data=False),
    ]
    result = client.infer(endpoint, [tensor], outputs=outputs, headers=headers, request_id="r-1")
    probabilities = result.as_numpy("probabilities")
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    assert probabilities.shape == (len(images), 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert labels == truth
    names = result.get_response()["parameters"]["labels"].split(",")
    assert [names[k] for k in probabilities.argmax(axis=1)] == truth
    assert result.get_response()["id"] == "r-1"
    assert result.get_response()["model_version"] == str(served_model.version)

    # A pinned version answers the same; one the endpoint does not serve is an error.
    pinned = client.infer(
        endpoint,
        [tensor],
        outputs=outputs,
        headers=headers,
        model_version=str(served_model.version),
    )
    assert np.allclose(pinned.as_numpy("probabilities"), probabilities, atol=1e-5)
    with pytest.raises(InferenceServerException, match="serves no version 999"):
        client.infer(endpoint, [tensor], headers=headers, model_version="999")
    with pytest.raises(InferenceServerException, match="no endpoint"):
        client.infer("no-such-endpoint", [tensor], headers=headers)
    wrong = triton_http.InferInput("image", [1, 1], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32), binary_data=False)
    with pytest.raises(InferenceServerException, match="BYTES, not FP32"):
        client.infer(endpoint, [wrong], headers=headers)
    client.close()


def test_v2_errors_are_the_protocols(
    served_model: ServedModel, serving: tuple[str, dict[str, str]], kiln_up: RunningKiln
) -> None:
    url, headers = serving
    base = f"http://{url}/v2/models/{served_model.endpoint}"
    bad = {
        "shape": {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2, 1], "data": ["x"]}]
        },
        "datatype": {"inputs": [{"name": "image", "datatype": "INT4", "shape": [1], "data": [1]}]},
        "not json": b"{",
        "output": {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}],
            "outputs": [{"name": "logits"}],
        },
    }
    for case, body in bad.items():
        sent = {"content": body} if isinstance(body, bytes) else {"json": body}
        answer = httpx.post(f"{base}/infer", headers=headers, **sent)  # type: ignore[arg-type]
        assert answer.status_code == 400, case
        assert set(answer.json()) == {"error"} and answer.json()["error"], case
    expired = httpx.post(
        f"{base}/infer", json=bad["output"], headers={"Authorization": "Bearer expired.token.x"}
    )
    assert expired.status_code == 401 and set(expired.json()) == {"error"}
    too_big = httpx.post(f"{base}/infer", headers=headers, content=b"x" * (70 * 1024 * 1024))
    assert too_big.status_code == 413 and set(too_big.json()) == {"error"}
    assert httpx.get(f"http://{url}/v2/models/nothing", headers=headers).json().keys() == {"error"}


def test_predict_answers_every_class_probability_when_asked(
    served_model: ServedModel, kiln_up: RunningKiln
) -> None:
    images, truth = samples(served_model)
    with Kiln(kiln_up.url, kiln_up.token("oip-app", "viewer")) as kiln:
        plain = kiln.serving.predict_many(served_model.endpoint, images[:1])
        full = kiln.serving.predict_many(served_model.endpoint, images, probabilities=True)
    assert "probabilities" not in plain["predictions"][0]
    for prediction, label in zip(full["predictions"], truth, strict=True):
        assert prediction["label"] == label
        assert set(prediction["probabilities"]) == {"dark", "light"}
        probabilities = prediction["probabilities"]
        assert max(probabilities.items(), key=lambda kv: kv[1])[0] == label


KSERVE_SCRIPT = r"""
import asyncio, json, sys
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

base, endpoint, token, images = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
headers = {"Authorization": f"Bearer {token}"}

async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    live = await client.is_server_live(base, headers=headers)
    ready = await client.is_model_ready(base, endpoint, headers=headers)
    tensor = InferInput(name="image", shape=[len(images), 1], datatype="BYTES", data=images)
    request = InferRequest(model_name=endpoint, infer_inputs=[tensor], request_id="k-1")
    response = await client.infer(base, request, model_name=endpoint, headers=headers)
    outputs = {o.name: o for o in response.outputs}
    await client.close()
    print(json.dumps({
        "live": live, "ready": ready, "id": response.id, "model_name": response.model_name,
        "labels": [x.decode() if isinstance(x, bytes) else x for x in outputs["label"].data],
        "probabilities": outputs["probabilities"].as_numpy().tolist(),
    }))

asyncio.run(main())
"""


def test_the_kserve_rest_client_gets_the_models_answers(
    served_model: ServedModel, serving: tuple[str, dict[str, str]], kiln_up: RunningKiln
) -> None:
    python = kserve_python()
    url, _ = serving
    images, truth = samples(served_model)
    done = subprocess.run(
        [
            python,
            "-c",
            KSERVE_SCRIPT,
            f"http://{url}",
            served_model.endpoint,
            kiln_up.token("kserve-app", "viewer"),
            json.dumps(images),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["live"] and result["ready"]
    assert result["id"] == "k-1" and result["model_name"] == served_model.endpoint
    assert result["labels"] == truth
    probabilities = np.asarray(result["probabilities"])
    assert probabilities.shape == (len(images), 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_v2_calls_during_a_canary_are_counted_in_its_analysis(
    served_model: ServedModel, serving: tuple[str, dict[str, str]], kiln_up: RunningKiln
) -> None:
    url, headers = serving
    model, endpoint = served_model.model, f"canary-{uuid.uuid4().hex[:6]}"
    with Kiln(kiln_up.url, kiln_up.token()) as kiln:
        job = kiln.training.submit(
            "image-cnn",
            served_model.dataset_id,
            team="client",
            model_name=model,
            seed=1,
            params={"image_size": 8, "image_mode": "L", "width": 8, "epochs": 2, "batch_size": 8},
        )
        kiln.training.wait(job["id"], timeout_s=300)
        deadline = time.monotonic() + 60
        while not (
            newer := [
                v for v in kiln.registry.versions(model) if v["version"] > served_model.version
            ]
        ):
            assert time.monotonic() < deadline, "the second version never reached the registry"
            time.sleep(0.3)
        candidate = newer[0]["version"]
        # A canary that holds its first step for the whole test: it judges nothing meanwhile.
        kiln.serving.create_endpoint(
            endpoint,
            model,
            "production",
            exist_ok=False,
            candidate_alias="canary",
            strategy="canary",
            canary_steps=[50, 100],
            step_interval_s=3600,
            min_requests_per_step=100_000,
        )
        # The production version serves first (a canary promoted while the endpoint's first
        # deployment is still loading can become its stable version instead).
        deadline = time.monotonic() + 180
        while (kiln.serving.endpoint(endpoint).get("stable") or {}).get(
            "version"
        ) != served_model.version:
            assert time.monotonic() < deadline, json.dumps(
                kiln.serving.endpoint(endpoint), default=str
            )
            time.sleep(0.5)
        kiln.registry.promote(model, candidate, "canary", "canary of v2 calls")
        deadline = time.monotonic() + 180
        while (kiln.serving.endpoint(endpoint).get("candidate") or {}).get("version") != candidate:
            assert time.monotonic() < deadline, json.dumps(
                kiln.serving.endpoint(endpoint), default=str
            ) + json.dumps(kiln.registry.aliases(model))
            time.sleep(0.5)

        images, _ = samples(served_model)
        client = triton_http.InferenceServerClient(url)
        tensor = triton_http.InferInput("image", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[images[0]]], dtype=object), binary_data=False)
        sent = 40
        answered: dict[str, int] = {}
        for _ in range(sent):
            version = client.infer(endpoint, [tensor], headers=headers).get_response()[
                "model_version"
            ]
            answered[version] = answered.get(version, 0) + 1
        client.close()
        assert set(answered) == {str(served_model.version), str(candidate)}  # both sides served

        def counted() -> tuple[int, int]:
            state = kiln.serving.endpoint(endpoint)
            mine = [d for d in state.get("deployments", []) if d["version"] == candidate][0]
            analysis = mine.get("analysis") or {}
            return (
                int((analysis.get("candidate") or {}).get("requests", 0)),
                int((analysis.get("stable") or {}).get("requests", 0)),
            )

        deadline = time.monotonic() + 30
        while sum(counted()) < sent and time.monotonic() < deadline:
            time.sleep(0.3)
        on_candidate, on_stable = counted()
        # Every v2 call is in the analysis, on the side that answered it.
        assert on_candidate == answered[str(candidate)]
        assert on_stable == answered[str(served_model.version)]
        kiln.serving.delete_endpoint(endpoint)
