"""Triton through ``tritonclient.grpc.aio``: load and unload models with config and files,
infer, list what is loaded. ``managed://`` starts and owns a private Triton process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from prometheus_client import Histogram
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult
from tritonclient.grpc._utils import _get_inference_request
from tritonclient.utils import InferenceServerException

from kiln_core.settings import state_dir
from kiln_serving import launcher
from kiln_serving.detection import DETECTIONS
from kiln_serving.model_repository import OUTPUT

log = logging.getLogger(__name__)
REQUESTS_PER_CALL = Histogram(
    "kiln_serving_requests_per_triton_call",
    "Predict requests answered by one shared Triton call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


class TritonUnavailable(Exception):
    """Triton did not answer (down, restarting, or the model is gone)."""


class InferenceFailed(Exception):
    """Triton answered with an error for this request (bad input or a failing model)."""


@dataclass
class _Waiter:
    data: np.ndarray
    future: asyncio.Future[np.ndarray]


@dataclass
class _ModelLane:
    """Calls in flight to one model and the requests waiting to go together in the next,
    with the latest caller's call settings."""

    model: str
    input_name: str
    datatype: str
    max_rows: int
    timeout_s: float
    parallel: int
    inflight: int = 0
    waiting: list[_Waiter] = field(default_factory=list)
    flush_soon: bool = False  # a send is scheduled for the end of this event-loop turn


class _InferStream:
    """One bidirectional gRPC stream to Triton (``ModelStreamInfer``) carrying many inference
    requests, each answer matched to its request by id.

    Measured on the shared-call path (``bench/serving.py``, 3 alternating pairs): a unary call
    costs this process a call object, its own invocation task and a completion hop per batch;
    on one open stream a batch is a message each way, so serving's CPU per request fell
    (196 -> 184 us) and its throughput rose by about 0.05 of direct's. If the stream breaks
    (Triton restarted, the connection dropped) every request waiting on it fails as
    unavailable and the next batch opens a new stream."""

    def __init__(self, client: grpcclient.InferenceServerClient) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending: dict[str, tuple[asyncio.Future[np.ndarray], asyncio.TimerHandle]] = {}
        self._ids = itertools.count(1)
        # tritonclient's own stream_infer drops the request id of an error answer, so which
        # request failed would be unknown; its stub and request builder keep it.
        self._call = client._client_stub.ModelStreamInfer(self._requests())
        self._reader = asyncio.ensure_future(self._read())

    @property
    def broken(self) -> bool:
        return self._reader.done()

    def infer(
        self,
        model: str,
        tensor: InferInput,
        outputs: list[InferRequestedOutput] | None,
        timeout_s: float,
    ) -> asyncio.Future[np.ndarray]:
        """The class probabilities of one request, as a future."""
        rid = str(next(self._ids))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        timer = loop.call_later(timeout_s, self._expire, rid, timeout_s)
        self._pending[rid] = (future, timer)
        request = _get_inference_request(
            model_name=model,
            inputs=[tensor],
            model_version="",
            request_id=rid,
            outputs=outputs,
            sequence_id=0,
            sequence_start=False,
            sequence_end=False,
            priority=0,
            timeout=None,
            parameters=None,
        )
        self._queue.put_nowait(request)
        return future

    async def close(self) -> None:
        self._queue.put_nowait(None)
        self._call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _requests(self) -> Any:
        while (request := await self._queue.get()) is not None:
            yield request

    def _expire(self, rid: str, timeout_s: float) -> None:
        self._answer(rid, TritonUnavailable(f"no answer from Triton in {timeout_s:g}s"))

    def _answer(self, rid: str, outcome: np.ndarray | BaseException) -> None:
        future, timer = self._pending.pop(rid, (None, None))
        if future is None or timer is None or future.done():
            return  # answered or expired already
        timer.cancel()
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    async def _read(self) -> None:
        failure: BaseException = TritonUnavailable("the stream to Triton ended")
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                rid = response.infer_response.id
                message = response.error_message
                if not message:
                    out = _output(InferResult(response.infer_response))
                    if out is None:
                        self._answer(rid, InferenceFailed("the model returned no probabilities"))
                    else:
                        self._answer(rid, out)
                elif rid in self._pending:
                    self._answer(rid, _failure(message, "unavailable" in message.lower()))
                else:  # an error Triton could not tie to a request: every one may be hit
                    failure = InferenceFailed(message)
                    break
        except grpc.RpcError as exc:
            failure = TritonUnavailable(f"{exc.code()}: {exc.details()}")
        except asyncio.CancelledError:
            failure = TritonUnavailable("the stream to Triton was closed")
            raise
        finally:
            for rid in list(self._pending):
                self._answer(rid, failure)
            self._call.cancel()


def _output(result: InferResult) -> np.ndarray | None:
    """A classifier's probabilities or a detector's ``[n, K, 6]`` boxes."""
    out = result.as_numpy(OUTPUT)
    return out if out is not None else result.as_numpy(DETECTIONS)


def _tensor(name: str, datatype: str, data: np.ndarray) -> InferInput:
    tensor = InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


def _failure(message: str, unavailable: bool) -> Exception:
    """What Triton's error means to serving: the server or the model gone (``unavailable``,
    or an unknown model) is not the request's fault; anything else is the model failing it."""
    if unavailable or "not found" in message:
        return TritonUnavailable(message)
    return InferenceFailed(message)


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
        backends = state_dir() / "triton" / "backends"  # shared with `kiln infra up`
        launcher.install_backends(backends)
        repo = Path(self._dir) / "models"
        repo.mkdir(parents=True, exist_ok=True)
        log_file = open(Path(self._dir) / "triton.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(
                [
                    str(launcher.server_binary()),
                    f"--model-repository={repo}",
                    "--model-control-mode=explicit",
                    f"--backend-directory={backends}",
                    "--http-address=127.0.0.1",
                    f"--http-port={self.http_port}",
                    "--grpc-address=127.0.0.1",
                    f"--grpc-port={self.grpc_port}",
                    f"--metrics-port={self.metrics_port}",
                    "--allow-gpu-metrics=false",
                    # Shared-memory names of our own, so it never collides with another Triton.
                    f"--backend-config=python,shm-region-prefix-name=kiln-{self.grpc_port}",
                    # Serving sends complete configs; Triton's auto-complete starts a Python
                    # stub per load just to ask the model (loads measured 2-3x faster without).
                    "--disable-auto-complete-config",
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
        # None asks for every output: a classifier's probabilities or a detector's boxes.
        self._outputs: list[InferRequestedOutput] | None = None
        self._lanes: dict[str, _ModelLane] = {}
        self._batches: set[asyncio.Task[None]] = set()
        self._stream: _InferStream | None = None

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
        for task in list(self._batches):
            task.cancel()
        await asyncio.gather(*self._batches, return_exceptions=True)
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
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
        tensor = _tensor(input_name, datatype, data)
        try:
            result = await self._client.infer(
                model, [tensor], outputs=self._outputs, client_timeout=timeout_s
            )
        except InferenceServerException as exc:
            status = (exc.status() or "").upper()
            raise _failure(exc.message(), "UNAVAILABLE" in status or "DEADLINE" in status) from exc
        out = _output(result)
        if out is None:
            raise InferenceFailed(f"{model} returned no probabilities")
        return out

    async def infer_streamed(
        self, model: str, input_name: str, datatype: str, data: np.ndarray, timeout_s: float = 30
    ) -> np.ndarray:
        """Like :meth:`infer`, over the open stream (opened again if it broke)."""
        if self._stream is None or self._stream.broken:
            self._stream = _InferStream(self._client)
        tensor = _tensor(input_name, datatype, data)
        return await self._stream.infer(model, tensor, self._outputs, timeout_s)

    async def infer_shared(
        self,
        model: str,
        input_name: str,
        datatype: str,
        data: np.ndarray,
        max_rows: int,
        parallel: int = 1,
        timeout_s: float = 30,
    ) -> np.ndarray:
        """Like :meth:`infer`, but concurrent requests to one model share Triton calls: with
        ``parallel`` calls in flight (one per model instance: measured best on this path,
        1155 req/s against 784 with two), later requests wait and go together (up to
        ``max_rows`` rows) in the next call. A free lane sends at the end of the current turn
        of the event loop, so requests read from the sockets in the same turn share that
        call too; one request alone goes at once, it only waits for its own turn to end."""
        lane = self._lanes.get(model)
        if lane is None:
            lane = self._lanes[model] = _ModelLane(
                model, input_name, datatype, max_rows, timeout_s, parallel
            )
        # The endpoint's instance count and limits may have changed since the last call.
        lane.max_rows, lane.timeout_s, lane.parallel = max_rows, timeout_s, parallel
        loop = asyncio.get_running_loop()
        waiter = _Waiter(data, loop.create_future())
        lane.waiting.append(waiter)
        if lane.inflight < lane.parallel and not lane.flush_soon:
            lane.flush_soon = True
            loop.call_soon(self._flush, lane)
        return await waiter.future

    def _flush(self, lane: _ModelLane) -> None:
        lane.flush_soon = False
        self._next_batch(lane)

    def _next_batch(self, lane: _ModelLane) -> None:
        lane.waiting = [w for w in lane.waiting if not w.future.done()]  # callers gone
        if not lane.waiting:
            if lane.inflight == 0 and self._lanes.get(lane.model) is lane:
                del self._lanes[lane.model]
            return
        if lane.inflight >= lane.parallel:
            return
        # Rows of the same shape, in arrival order, up to the model's batch limit.
        shape = lane.waiting[0].data.shape[1:]
        batch: list[_Waiter] = []
        rows = 0
        rest: list[_Waiter] = []
        for w in lane.waiting:
            n = w.data.shape[0]
            if w.data.shape[1:] == shape and (not batch or rows + n <= lane.max_rows):
                batch.append(w)
                rows += n
            else:
                rest.append(w)
        lane.waiting = rest
        lane.inflight += 1

        async def run() -> None:
            try:
                await self._answer(lane, batch)
            finally:
                lane.inflight -= 1
                self._next_batch(lane)

        task = asyncio.ensure_future(run())
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _answer(self, lane: _ModelLane, batch: list[_Waiter]) -> None:
        """One call for the whole batch; if the model rejects it, each request on its own, so
        a bad input fails only the request that sent it."""
        model, input_name, datatype = lane.model, lane.input_name, lane.datatype
        timeout_s = lane.timeout_s
        REQUESTS_PER_CALL.observe(len(batch))
        data = batch[0].data if len(batch) == 1 else np.concatenate([w.data for w in batch])
        try:
            probs = await self.infer_streamed(model, input_name, datatype, data, timeout_s)
        except InferenceFailed as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            singles = await asyncio.gather(
                *(self.infer(model, input_name, datatype, w.data, timeout_s) for w in batch),
                return_exceptions=True,
            )
            for w, outcome in zip(batch, singles, strict=True):
                _settle(w, outcome)
            return
        except Exception as exc:  # noqa: BLE001 - every waiter gets the failure as its own
            for w in batch:
                _settle(w, exc)
            return
        offset = 0
        for w in batch:
            n = w.data.shape[0]
            _settle(w, probs[offset : offset + n])
            offset += n


def _settle(waiter: _Waiter, outcome: np.ndarray | BaseException) -> None:
    if waiter.future.done():
        return
    if isinstance(outcome, BaseException):
        waiter.future.set_exception(outcome)
    else:
        waiter.future.set_result(outcome)
