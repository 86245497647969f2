"""The training runtime: one run of a template on a dataset version, pausable and resumable.

:func:`run_training` is synchronous and knows nothing of jobs, databases or Celery; the service
hands it a :class:`RunSpec` and a :class:`RunControl` through which it polls for pause/cancel,
reports progress and stores checkpoints.

Reproducibility: the model is initialised from ``seed``; epoch ``e``'s data order comes from
``DistributedSampler(seed=seed)`` at epoch ``e`` (for one process too), and dropout draws from a
torch generator seeded from ``(seed, rank)``. A checkpoint holds the weights, the optimizer
state, every rank's RNG states, the epoch, the number of batches done in it, the running epoch
sums and the early-stopping state; the learning rate is a pure function of the step. So a run
paused mid-epoch and resumed ends with bit-identical weights and metrics to one never paused.

Checkpoints are ``torch.save`` of plain containers and tensors and are read back with
``weights_only=True``: nothing in them needs general unpickling.

Cost over a plain loop: the data is decoded once into memory tensors (see
:mod:`kiln_training.examples`), a step adds one ``control.requested()`` poll and one
``control.on_step`` call (plus, data-parallel, one broadcast of a flag), evaluation runs once at
the end (and after every epoch only when early stopping needs it), and checkpoints are written
every ``checkpoint_every_steps`` steps and at epoch ends.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from kiln_training.detection import DetectionRun, plain_detection_loop
from kiln_training.examples import DataRef, prepare_data
from kiln_training.loop import (
    EpochProgress,
    IncompatibleCheckpoint,
    Run,
    RunControl,
    RunOutcome,
    RunSpec,
    StepProgress,
    _optimizer,
    warm_up,
)
from kiln_training.networks import build_network
from kiln_training.templates import Template, get_template

__all__ = [
    "DataRef",
    "EpochProgress",
    "IncompatibleCheckpoint",
    "RunControl",
    "RunOutcome",
    "RunSpec",
    "StepProgress",
    "plain_training_loop",
    "run_training",
    "warm_up",
]

DIST_TIMEOUT = timedelta(minutes=5)


def run_training(spec: RunSpec, control: RunControl) -> RunOutcome:
    """Train ``spec`` to the end, or until paused, cancelled, stopped early or out of time.

    Resumes exactly from ``control.load_checkpoint()`` when it returns one. With
    ``world_size > 1`` the calling process is rank 0 and starts the other ranks as child
    processes (so it works inside daemonic Celery workers, which may not fork children with
    ``multiprocessing``).
    """
    template = get_template(spec.template)
    checkpoint = control.load_checkpoint()
    previous_threads = torch.get_num_threads()
    try:
        if spec.world_size <= 1:
            if spec.num_threads is not None:
                torch.set_num_threads(max(1, spec.num_threads))
            return _run_class(template)(spec, template, control, checkpoint).run()
        return _run_distributed(spec, template, control, checkpoint)
    finally:
        torch.set_num_threads(previous_threads)


def _run_class(template: Template) -> type[Run]:
    """The run of a template's task: detectors subclass the classifiers' run."""
    if template.task == "object-detection":
        return DetectionRun
    return Run


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_distributed(
    spec: RunSpec, template: Template, control: RunControl, checkpoint: bytes | None
) -> RunOutcome:
    port = _free_port()
    threads = max(1, (spec.num_threads or os.cpu_count() or 1) // spec.world_size)
    children = []
    for rank in range(1, spec.world_size):
        child = subprocess.Popen(
            [sys.executable, "-c", "from kiln_training.trainer import _rank_main; _rank_main()"],
            stdin=subprocess.PIPE,
        )
        assert child.stdin is not None
        # Our own spec and checkpoint to our own child process; nothing user-supplied.
        child.stdin.write(pickle.dumps((spec, checkpoint, port, rank, threads, os.getpid())))
        child.stdin.close()
        children.append(child)
    torch.set_num_threads(threads)
    ok = False
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=0,
            world_size=spec.world_size,
            timeout=DIST_TIMEOUT,
        )
        try:
            run = _run_class(template)(spec, template, control, checkpoint, 0, spec.world_size)
            outcome = run.run()
        finally:
            dist.destroy_process_group()
        ok = True
    finally:
        for child in children:
            try:
                child.wait(timeout=60 if ok else 5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    failed = [c.returncode for c in children if c.returncode != 0]
    if failed:
        raise RuntimeError(f"data-parallel rank(s) exited with codes {failed}")
    return outcome


def _rank_main() -> None:
    """Entry point of ranks 1…N-1: spec and checkpoint arrive pickled on stdin."""
    spec, checkpoint, port, rank, threads, parent = pickle.loads(sys.stdin.buffer.read())
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=spec.world_size,
        timeout=DIST_TIMEOUT,
    )
    try:
        template = get_template(spec.template)
        _run_class(template)(spec, template, None, checkpoint, rank, spec.world_size).run()
    finally:
        dist.destroy_process_group()


def _exit_with_parent(parent: int) -> None:
    # A rank whose rank 0 was killed (say, its worker got SIGKILL) must not linger.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


# --- the baseline ------------------------------------------------------------------------------


def plain_training_loop(spec: RunSpec) -> float:
    """Wall seconds of the same training as a plain PyTorch script would do it.

    Same data reading and decoding, model, optimizer, learning-rate schedule, batches and
    epochs as :func:`run_training` with one process, then one evaluation pass; no control
    polls, progress, checkpoints or export. ``overhead = run_training time / this``.
    """
    if get_template(spec.template).task == "object-detection":
        return plain_detection_loop(spec)
    previous_threads = torch.get_num_threads()
    if spec.num_threads is not None:
        torch.set_num_threads(max(1, spec.num_threads))
    try:
        return _plain_loop(spec)
    finally:
        torch.set_num_threads(previous_threads)


def _plain_loop(spec: RunSpec) -> float:
    started = time.monotonic()
    template = get_template(spec.template)
    data = prepare_data(spec.data, template.kind, spec.params, spec.seed)
    torch.manual_seed(spec.seed)
    model = build_network(template.name, spec.params, data.input_shape, len(data.label_map))
    optimizer = _optimizer(model, spec.params)
    criterion = nn.CrossEntropyLoss()
    epochs = spec.max_epochs if spec.max_epochs is not None else int(spec.params["epochs"])
    batch = int(spec.params["batch_size"])
    n = len(data.train)
    steps_per_epoch = math.ceil(n / batch)
    if n % batch == 1 and steps_per_epoch > 1:
        steps_per_epoch -= 1
    total = max(1, epochs * steps_per_epoch)
    base_lr = float(spec.params["lr"])
    cosine = spec.params["lr_schedule"] == "cosine"
    step = 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed + epoch))
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            lr = base_lr * 0.5 * (1 + math.cos(math.pi * step / total)) if cosine else base_lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(data.train.inputs[idx]), data.train.targets[idx])
            loss.backward()
            optimizer.step()
            loss.item()  # a plain script logs its loss too
            step += 1
    model.eval()
    with torch.no_grad():
        (model(data.eval.inputs).argmax(dim=1) == data.eval.targets).float().mean().item()
    return time.monotonic() - started
