"""Triton through ``tritonclient.grpc.aio``: load and unload models with config and files,
infer, list what is loaded. ``managed://`` starts and owns a private Triton process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)


class TritonUnavailable(Exception):
    """Triton did not answer (down, restarting, or the model is gone)."""


class InferenceFailed(Exception):
    """Triton answered with an error for this request (bad input or a failing model)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManagedTriton:
    """A tritonserver process of our own on free ports, launched like ``kiln infra up`` does
    (the nvidia-pytriton wheel's binary, the Python backend stub of this interpreter)."""

    def __init__(self, grpc_port: int | None = None, http_port: int | None = None) -> None:
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="kiln-triton-")

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Spawn tritonserver (returns at once; wait with :meth:`wait_ready`)."""
        from kiln_cli.infra import _Triton  # the launcher `kiln infra up` uses

        launcher = _Triton()
        launcher.install(lambda _msg: None)
        dist, _ = launcher._dist()
        repo = Path(self._dir) / "models"
        repo.mkdir(parents=True, exist_ok=True)
        log_file = open(Path(self._dir) / "triton.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(
                [
                    str(dist / "bin" / "tritonserver"),
                    f"--model-repository={repo}",
                    "--model-control-mode=explicit",
                    f"--backend-directory={launcher.backends}",
                    "--http-address=127.0.0.1",
                    f"--http-port={self.http_port}",
                    "--grpc-address=127.0.0.1",
                    f"--grpc-port={self.grpc_port}",
                    f"--metrics-port={self.metrics_port}",
                    "--allow-gpu-metrics=false",
                    # Shared-memory names of our own, so it never collides with another Triton.
                    f"--backend-config=python,shm-region-prefix-name=kiln-{self.grpc_port}",
                    "--exit-timeout-secs=5",
                    "--log-verbose=0",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=launcher.server_env(),
                cwd=self._dir,
                start_new_session=True,
            )
        finally:
            log_file.close()

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        client = grpcclient.InferenceServerClient(self.url)
        try:
            deadline = asyncio.get_running_loop().time() + timeout_s
            while True:
                if not self.alive():
                    raise RuntimeError(f"tritonserver exited; see {self._dir}/triton.log")
                with contextlib.suppress(Exception):
                    if await client.is_server_ready(client_timeout=1.0):
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"tritonserver not ready in {timeout_s}s")
                await asyncio.sleep(0.2)
        finally:
            await client.close()

    def kill(self) -> None:
        """SIGKILL the server and its Python stubs (a crash, for tests)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()


class TritonGateway:
    """The one way serving talks to Triton."""

    def __init__(self, url: str) -> None:
        self.managed: ManagedTriton | None = None
        if url.startswith("managed://"):
            self.managed = ManagedTriton()
            self.address = self.managed.url
        elif url.startswith("grpc://"):
            self.address = url.removeprefix("grpc://").rstrip("/")
        else:
            raise ValueError(f"unsupported Triton URL {url!r} (use grpc://host:port or managed://)")
        self.client: grpcclient.InferenceServerClient | None = None
        self._outputs = [InferRequestedOutput("probabilities")]

    async def start(self) -> None:
        if self.managed is not None:
            await self.ensure_managed()
        self.client = grpcclient.InferenceServerClient(self.address)

    async def ensure_managed(self) -> None:
        """Start (or restart, after a crash) the Triton this process owns."""
        assert self.managed is not None
        if not self.managed.alive():
            await asyncio.to_thread(self.managed.start)
            await self.managed.wait_ready()

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.managed is not None:
            await asyncio.to_thread(self.managed.stop)

    @property
    def _client(self) -> grpcclient.InferenceServerClient:
        if self.client is None:
            raise TritonUnavailable("the Triton client is not started")
        return self.client

    async def ready(self, timeout_s: float = 2.0) -> bool:
        try:
            return bool(await self._client.is_server_live(client_timeout=timeout_s))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    async def loaded_models(self) -> set[str]:
        """Names of the models Triton has loaded (its repository index does not list models
        loaded from config and files, the statistics do)."""
        try:
            stats = await self._client.get_inference_statistics(as_json=True, client_timeout=5.0)
        except InferenceServerException as exc:
            raise TritonUnavailable(str(exc)) from exc
        return {m["name"] for m in stats.get("model_stats", [])}

    async def model_ready(self, name: str) -> bool:
        try:
            return bool(await self._client.is_model_ready(name, client_timeout=2.0))
        except Exception:  # noqa: BLE001
            return False

    async def load(self, name: str, config: dict[str, Any], files: dict[str, bytes]) -> None:
        try:
            await self._client.load_model(
                name, config=json.dumps({"name": name, **config}), files=files
            )
        except InferenceServerException as exc:
            raise InferenceFailed(f"Triton refused to load {name}: {exc.message()}") from exc

    async def unload(self, name: str) -> None:
        with contextlib.suppress(InferenceServerException):
            await self._client.unload_model(name)

    async def infer(
        self, model: str, input_name: str, datatype: str, data: np.ndarray, timeout_s: float = 30
    ) -> np.ndarray:
        """Class probabilities, one row per input row."""
        tensor = InferInput(input_name, list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        try:
            result = await self._client.infer(
                model, [tensor], outputs=self._outputs, client_timeout=timeout_s
            )
        except InferenceServerException as exc:
            status = (exc.status() or "").upper()
            if "UNAVAILABLE" in status or "DEADLINE" in status or "not found" in exc.message():
                raise TritonUnavailable(exc.message()) from exc
            raise InferenceFailed(exc.message()) from exc
        out = result.as_numpy("probabilities")
        if out is None:
            raise InferenceFailed(f"{model} returned no probabilities")
        return out
