"""TorchScript artifacts: checking one against its declared signature, and int8 compression.

Files are only ever opened with ``torch.jit.load`` (TorchScript's own restricted loader),
never ``torch.load``: a user's file is not unpickled. A model is still foreign code, so the
service runs it in a child process with a time limit (:func:`check_isolated`,
:func:`compress_isolated`): a model that loops forever or crashes torch fails its check and
leaves the service running. Everything here is CPU-bound and synchronous; callers run it in a
thread.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import tempfile
import zipfile
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import torch

from kiln_core.catalog import ModelSignature, TensorSpec
from kiln_core.errors import ValidationFailed

DTYPES: dict[str, torch.dtype] = {
    "FP16": torch.float16,
    "FP32": torch.float32,
    "FP64": torch.float64,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "UINT8": torch.uint8,
    "BOOL": torch.bool,
}


CHECK_TIMEOUT_S = 60.0
COMPRESS_TIMEOUT_S = 900.0


class InvalidModel(ValidationFailed):
    type, title = "invalid-model", "The model file is not a usable TorchScript model"


def load(raw: bytes) -> torch.jit.ScriptModule:
    """Load TorchScript bytes on the CPU, or raise :class:`InvalidModel`."""
    # A TorchScript file is a zip archive with code; anything else is refused before torch.
    if not raw.startswith(b"PK\x03\x04"):
        raise InvalidModel("the file is not a TorchScript archive (a zip file saved by torch.jit)")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise InvalidModel(f"the file is not a readable archive: {exc}") from None
    if not any("/code/" in name for name in names):
        raise InvalidModel(
            "the archive holds no TorchScript code (a pickled model or state dict saved with "
            "torch.save is not accepted; export it with torch.jit.script or torch.jit.trace)"
        )
    try:
        module = torch.jit.load(io.BytesIO(raw), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any loader error means an unusable file
        raise InvalidModel(f"torch.jit.load refused the file: {_short(exc)}") from None
    module.eval()
    return module


def _dtype(spec: TensorSpec) -> torch.dtype:
    dtype = DTYPES.get(spec.dtype.upper())
    if dtype is None:
        raise InvalidModel(
            f"tensor {spec.name!r}: dtype {spec.dtype!r} cannot be checked; "
            f"use one of {', '.join(DTYPES)}"
        )
    return dtype


def example_inputs(
    signature: ModelSignature, batch: int = 1, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Inputs shaped by the signature (variable dimensions as 1): zeros, or with a
    ``generator`` standard normal values for float tensors (integer tensors stay zero)."""
    inputs = []
    for spec in signature.inputs:
        dtype = _dtype(spec)
        shape = [batch, *[d if d > 0 else 1 for d in spec.shape]]
        if generator is not None and dtype.is_floating_point:
            inputs.append(torch.randn(shape, generator=generator).to(dtype))
        else:
            inputs.append(torch.zeros(shape, dtype=dtype))
    return inputs


def _outputs(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, list | tuple) and all(isinstance(t, torch.Tensor) for t in result):
        return list(result)
    raise InvalidModel(f"the model returned {type(result).__name__}, not tensors")


def run(module: torch.jit.ScriptModule, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    try:
        with torch.inference_mode():
            return _outputs(module(*inputs))
    except InvalidModel:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own error, reported to the caller
        raise InvalidModel(
            f"running the model on its signature's inputs failed: {_short(exc)}"
        ) from None


def check(raw: bytes, signature: ModelSignature, label_map: list[str]) -> dict[str, Any]:
    """Load the model and run it once on zero inputs built from ``signature``; the outputs
    must match the declared outputs (and the label map the class dimension)."""
    if not signature.inputs or not signature.outputs:
        raise InvalidModel("the signature must declare at least one input and one output")
    module = load(raw)
    outputs = run(module, example_inputs(signature))
    if len(outputs) != len(signature.outputs):
        raise InvalidModel(
            f"the model returned {len(outputs)} tensors, the signature declares "
            f"{len(signature.outputs)}"
        )
    problems = []
    for spec, tensor in zip(signature.outputs, outputs, strict=True):
        got = list(tensor.shape)
        want = [1, *spec.shape]
        if len(got) != len(want) or any(w > 0 and g != w for g, w in zip(got, want, strict=True)):
            problems.append(f"output {spec.name!r} has shape {got[1:]}, declared {spec.shape}")
        if tensor.dtype != _dtype(spec):
            problems.append(f"output {spec.name!r} is {tensor.dtype}, declared {spec.dtype}")
    # A detector's rows are boxes (x1, y1, x2, y2, score, class), not one column per label.
    detector = signature.outputs[0].name == "detections"
    if (
        label_map
        and not detector
        and outputs[0].dim() >= 2
        and outputs[0].shape[-1] != len(label_map)
    ):
        problems.append(
            f"the label map names {len(label_map)} classes, the first output has "
            f"{outputs[0].shape[-1]} columns"
        )
    if problems:
        raise InvalidModel("signature mismatch: " + "; ".join(problems), problems=problems)
    return {"output_shapes": [list(t.shape[1:]) for t in outputs]}


def quantize_int8(raw: bytes) -> bytes:
    """Dynamic int8 quantisation of the Linear layers of a TorchScript model, kept TorchScript.

    ``torch.ao.quantization.quantize_dynamic`` swaps eager ``nn.Linear`` modules and leaves a
    scripted module unchanged, so the graph-mode pass for scripted modules is used instead
    (weights int8, activations quantised on the fly).
    """
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic_jit

    module = load(raw)
    try:
        quantized = quantize_dynamic_jit(module, {"": default_dynamic_qconfig})
    except Exception as exc:  # noqa: BLE001 - reported on the job
        raise InvalidModel(f"dynamic quantisation failed: {_short(exc)}") from None
    if "quantized::linear_dynamic" not in str(quantized.inlined_graph):
        raise InvalidModel("the model has no Linear layers to quantise")
    buffer = io.BytesIO()
    torch.jit.save(quantized, buffer)
    return buffer.getvalue()


def agreement(
    original: bytes, derived: bytes, signature: ModelSignature, samples: int, seed: int
) -> dict[str, Any]:
    """How closely ``derived`` follows ``original`` on seeded random inputs from the
    signature: top-1 agreement of the first output, and its mean absolute difference."""
    a, b = load(original), load(derived)
    inputs = example_inputs(signature, batch=samples, generator=torch.Generator().manual_seed(seed))
    out_a, out_b = run(a, inputs)[0].float(), run(b, inputs)[0].float()
    top1 = (out_a.argmax(dim=-1) == out_b.argmax(dim=-1)).float().mean().item()
    return {
        "top1_agreement": round(top1, 6),
        "mean_abs_output_difference": round((out_a - out_b).abs().mean().item(), 6),
        "samples": samples,
        "inputs": f"float tensors standard normal (seed {seed}), integer tensors zero",
    }


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


# --- isolation ----------------------------------------------------------------------------------


def _check_file(path: str, signature: dict[str, Any], label_map: list[str]) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read()
    return check(raw, ModelSignature.model_validate(signature), label_map)


def _compress_file(
    path: str, out: str, signature: dict[str, Any], label_map: list[str], samples: int, seed: int
) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read()
    quantized = quantize_int8(raw)
    parsed = ModelSignature.model_validate(signature)
    # The derived file must pass the same check an import does before it is registered.
    check(quantized, parsed, label_map)
    with open(out, "wb") as f:
        f.write(quantized)
    return agreement(raw, quantized, parsed, samples, seed)


_CHILD_WORK: dict[str, Callable[..., dict[str, Any]]] = {
    "check": _check_file,
    "compress": _compress_file,
    "ready": lambda: {},
}
_server_ready = False
SERVER_START_TIMEOUT_S = 300.0


def _child(send: Connection, work: str, args: tuple[Any, ...]) -> None:
    try:
        send.send(("ok", _CHILD_WORK[work](*args)))
    except InvalidModel as exc:
        send.send(("invalid", {"detail": exc.detail, "extra": exc.extra}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        send.send(("error", _short(exc)))
    finally:
        send.close()


def _context() -> Any:
    # A fork server that imported torch once: each check forks from it in milliseconds,
    # without inheriting the service's threads or event loop.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "kiln_registry.torchscript"])
    return context


def _isolated(work: str, args: tuple[Any, ...], timeout_s: float) -> dict[str, Any]:
    global _server_ready
    if not _server_ready:
        # The first fork waits for the server to import torch: not the model's time.
        _run_child(_context(), "ready", (), SERVER_START_TIMEOUT_S)
        _server_ready = True
    return _run_child(_context(), work, args, timeout_s)


def _run_child(context: Any, work: str, args: tuple[Any, ...], timeout_s: float) -> dict[str, Any]:
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, work, args), daemon=True)
    process.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            raise InvalidModel(f"the model did not finish within {timeout_s:g} s")
        try:
            status, payload = receive.recv()
        except EOFError:
            process.join(5)
            raise InvalidModel(
                f"the model crashed the process running it (exit code {process.exitcode})"
            ) from None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receive.close()
    if status == "ok":
        return payload  # type: ignore[no-any-return]
    if status == "invalid":
        raise InvalidModel(payload["detail"], **payload["extra"])
    raise RuntimeError(f"checking the model failed: {payload}")


def check_isolated(
    raw: bytes, signature: ModelSignature, label_map: list[str], timeout_s: float | None = None
) -> dict[str, Any]:
    """:func:`check` in a child process that is killed after ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="kiln-model-") as tmp:
        path = os.path.join(tmp, "model.pt")
        with open(path, "wb") as f:
            f.write(raw)
        return _isolated(
            "check",
            (path, signature.model_dump(mode="json"), label_map),
            CHECK_TIMEOUT_S if timeout_s is None else timeout_s,
        )


def compress_isolated(
    raw: bytes,
    signature: ModelSignature,
    label_map: list[str],
    samples: int,
    seed: int,
    timeout_s: float | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Quantise, check and compare (see :func:`quantize_int8`, :func:`agreement`) in a child
    process; returns the int8 file and the agreement report."""
    with tempfile.TemporaryDirectory(prefix="kiln-model-") as tmp:
        path, out = os.path.join(tmp, "model.pt"), os.path.join(tmp, "int8.pt")
        with open(path, "wb") as f:
            f.write(raw)
        report = _isolated(
            "compress",
            (path, out, signature.model_dump(mode="json"), label_map, samples, seed),
            COMPRESS_TIMEOUT_S if timeout_s is None else timeout_s,
        )
        with open(out, "rb") as f:
            return f.read(), report
