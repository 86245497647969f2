"""Round trips against the real local stack started by `kiln infra up`.

These tests fail (never skip) when a component is down: a silently skipped infra test would let
a broken local stack look green.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

import kiln_cli.infra as infra

pytestmark = pytest.mark.integration

ENV = infra.local_stack_env()

# A Python-backend model that doubles its FP32 input. It is shipped inline through
# load_model(files=...), so the test needs no filesystem shared with the server.
DOUBLE_MODEL = b"""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x * np.float32(2)).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""

DOUBLE_CONFIG = {
    "name": "kiln_infra_double",
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    "instance_group": [{"kind": "KIND_CPU", "count": 1}],
}


def require(name: str) -> None:
    """Fail with the health check's explanation rather than a connection traceback."""
    # status() works from inside the async tests' running loop too.
    (component,) = infra.status([name])
    if not component.healthy:
        pytest.fail(f"{name} is down: {component.detail} (run `kiln infra up`)", pytrace=False)


def test_status_all_healthy() -> None:
    statuses = infra.status()
    assert [s.name for s in statuses] == list(infra.COMPONENTS)
    down = [f"{s.name}: {s.detail}" for s in statuses if not s.healthy]
    assert not down, "components down:\n" + "\n".join(down)


def test_local_stack_env_is_loopback() -> None:
    for key in (
        "KILN_DATABASE_URL",
        "KILN_BUS_URL",
        "KILN_STORAGE_URL",
        "KILN_CELERY_BROKER_URL",
        "KILN_REDIS_URL",
        "KILN_TRITON_URL",
    ):
        assert urlsplit(ENV[key]).hostname == "127.0.0.1", key


async def test_postgres_query() -> None:
    require("postgres")
    import asyncpg

    # asyncpg wants a plain postgresql:// DSN, the settings carry the SQLAlchemy driver suffix.
    dsn = ENV["KILN_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await conn.fetchval("SELECT current_user") == "kiln"
        await conn.execute("CREATE TEMP TABLE kiln_infra_probe (id int, name text)")
        await conn.executemany("INSERT INTO kiln_infra_probe VALUES ($1, $2)", [(1, "a"), (2, "b")])
        rows = await conn.fetch("SELECT id, name FROM kiln_infra_probe ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "a"), (2, "b")]
    finally:
        await conn.close()


async def test_redis_round_trip() -> None:
    require("redis")
    import redis.asyncio as aioredis

    client = aioredis.from_url(ENV["KILN_REDIS_URL"])
    try:
        key = f"kiln-infra-test:{uuid.uuid4().hex}"
        await client.set(key, b"value", ex=60)
        assert await client.get(key) == b"value"
        await client.delete(key)
    finally:
        await client.aclose()


async def test_kafka_produce_consume() -> None:
    require("kafka")
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    bootstrap = urlsplit(ENV["KILN_BUS_URL"]).netloc
    topic = f"kiln-infra-test-{uuid.uuid4().hex[:12]}"
    payloads = [f"message-{i}".encode() for i in range(5)]

    # The topic is auto-created by the first produce (auto.create.topics.enable); one key keeps
    # all messages on one partition so their order is checkable.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for payload in payloads:
            await producer.send_and_wait(topic, payload, key=b"k")
    finally:
        await producer.stop()

    # A consumer group exercises the group coordinator and __consumer_offsets (replication
    # factor 1 on a single node), which is what the services rely on.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"kiln-infra-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received: list[bytes] = []

        async def collect() -> None:
            while len(received) < len(payloads):
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    received.extend(r.value for r in records if r.value is not None)

        await asyncio.wait_for(collect(), timeout=60)
        assert received == payloads
        await consumer.commit()
    finally:
        await consumer.stop()


def test_minio_put_get() -> None:
    require("minio")
    import io

    from minio import Minio

    url = urlsplit(ENV["KILN_STORAGE_URL"])
    secure = parse_qs(url.query).get("secure", ["true"])[0] == "true"
    assert url.username and url.password and url.hostname
    client = Minio(
        f"{url.hostname}:{url.port}",
        access_key=url.username,
        secret_key=url.password,
        secure=secure,
    )
    bucket = url.path.strip("/")
    assert client.bucket_exists(bucket)
    name = f"kiln-infra-test/{uuid.uuid4().hex}.bin"
    data = uuid.uuid4().bytes * 1000
    client.put_object(bucket, name, io.BytesIO(data), length=len(data))
    try:
        response = client.get_object(bucket, name)
        try:
            assert response.read() == data
        finally:
            response.close()
            response.release_conn()
    finally:
        client.remove_object(bucket, name)


def test_triton_python_backend_round_trip() -> None:
    require("triton")
    import tritonclient.grpc as grpcclient

    url = urlsplit(ENV["KILN_TRITON_URL"])
    client = grpcclient.InferenceServerClient(url=url.netloc)
    name = DOUBLE_CONFIG["name"]
    assert isinstance(name, str)
    try:
        assert client.is_server_ready()
        # Explicit model control: config and code travel in the request, nothing on disk.
        client.load_model(
            name, config=json.dumps(DOUBLE_CONFIG), files={"file:1/model.py": DOUBLE_MODEL}
        )
        assert client.is_model_ready(name)

        x = np.array([0.5, -1.0, 3.25, 1e6], dtype=np.float32)
        infer_input = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        infer_input.set_data_from_numpy(x)
        result = client.infer(
            name, [infer_input], outputs=[grpcclient.InferRequestedOutput("OUTPUT0")]
        )
        out = result.as_numpy("OUTPUT0")
        assert out is not None and out.dtype == np.float32
        np.testing.assert_array_equal(out, x * 2)
    finally:
        # Leave the server as we found it; unloading a model that never loaded is harmless.
        try:
            client.unload_model(name)
        finally:
            client.close()


def test_default_layout_is_the_shared_stack() -> None:
    assert infra.local_stack_env() == infra.local_stack_env(infra.DEFAULT)
    assert infra.DEFAULT.state == infra.state_dir()
    assert infra.DEFAULT.pg_port == infra.PG_PORT and infra.DEFAULT.kafka_port == infra.KAFKA_PORT


def test_faults_layout_is_private() -> None:
    """The fault suite's stack shares no port and no state directory with the shared one."""
    faults, shared = infra.FAULTS, infra.DEFAULT
    assert faults.state == infra.state_dir() / "faults"
    ports: tuple[str, ...] = ("pg_port", "redis_port", "kafka_port", "kafka_controller_port")
    ports += ("minio_port",)
    ports += ("minio_console_port", "triton_http_port", "triton_grpc_port", "triton_metrics_port")
    shared_ports = {getattr(shared, p) for p in ports}
    assert not shared_ports & {getattr(faults, p) for p in ports}
    shared_urls, fault_urls = infra.local_stack_env(), infra.local_stack_env(faults)
    assert shared_urls.keys() == fault_urls.keys()
    for key, url in fault_urls.items():
        assert urlsplit(url).port != urlsplit(shared_urls[key]).port, key


def test_component_controls_refuse_what_is_not_running() -> None:
    """Fault injection names a component of one layout; one that is not running there is an
    error, never a signal to some other process."""
    idle = infra.Layout(name="idle", subdir="idle-never-started", offset=-31000)
    assert infra.component_pid("kafka", idle) is None
    with pytest.raises(infra.InfraError, match="not running"):
        infra.signal_component("kafka", 0, idle)
    assert infra.stop_component("minio", idle) is False
    with pytest.raises(infra.InfraError, match="unknown component"):
        infra.component_pid("zookeeper", idle)
    assert not (infra.state_dir() / "idle-never-started").exists()
