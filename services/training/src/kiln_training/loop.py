"""One process's run of a template: the loop, its checkpoints and its progress.

:mod:`kiln_training.trainer` starts runs (one process or data-parallel) and picks the run class
of a template's task: :class:`Run` here for classifiers, its subclass in
:mod:`kiln_training.detection` for detectors. This module imports neither, so both can build on
it without a cycle.
"""

from __future__ import annotations

import io
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from kiln_core.errors import Conflict
from kiln_training.detection_evaluation import DetectionReport
from kiln_training.evaluation import EvaluationReport, evaluate
from kiln_training.examples import DataRef, Examples, PreparedData, prepare_data
from kiln_training.export import ExportedModel, export_model, load_state_dict
from kiln_training.networks import build_network
from kiln_training.templates import Template

__all__ = [
    "DataRef",
    "EpochProgress",
    "Run",
    "RunControl",
    "RunOutcome",
    "RunSpec",
    "StepProgress",
    "warm_up",
]

CHECKPOINT_FORMAT = 1
EVAL_BATCH = 1024
# What rank 0 tells every rank before each step (and after each epoch).
GO, STOP, PAUSE, CANCEL = 0, 1, 2, 3


@dataclass
class RunSpec:
    template: str
    params: dict[str, Any]  # already validated (templates.validate_params)
    seed: int
    data: DataRef
    max_epochs: int | None = None  # overrides params["epochs"]
    time_budget_s: float | None = None  # then stop as succeeded with the weights so far
    early_stopping_patience: int | None = None  # epochs without eval-accuracy improvement
    world_size: int = 1  # > 1: data-parallel over that many local processes
    init_weights: bytes | None = None  # a state_dict from ExportedModel.state_dict (warm start)
    checkpoint_every_steps: int = 50  # plus at every epoch end
    # CPU threads for the whole run (split over ranks); None keeps torch's default. Set it to
    # the job's cpu allocation: more threads than free cores makes torch spin, not compute.
    num_threads: int | None = None


@dataclass
class StepProgress:
    epoch: int
    step: int
    loss: float
    lr: float
    samples_per_s: float
    accuracy: float | None  # running train accuracy of the epoch


@dataclass
class EpochProgress:
    epoch: int
    step: int
    train_loss: float
    train_accuracy: float | None  # None for detectors (their loss is the measure)
    eval_loss: float | None  # only when evaluated after every epoch (early stopping)
    eval_accuracy: float | None  # detectors: the evaluation split's mAP@.5
    lr: float
    samples_per_s: float
    seconds: float


class RunControl(Protocol):
    """What the service gives a run; every call comes from the rank-0 process."""

    def requested(self) -> Literal["pause", "cancel"] | None:
        """Polled before every step; must be cheap."""
        ...

    def on_step(self, p: StepProgress) -> None: ...

    def on_epoch(self, p: EpochProgress) -> None: ...

    def save_checkpoint(self, data: bytes, step: int) -> None: ...

    def load_checkpoint(self) -> bytes | None: ...


@dataclass
class RunOutcome:
    status: Literal["succeeded", "paused", "cancelled"]
    step: int
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: EvaluationReport | DetectionReport | None = None
    model: ExportedModel | None = None
    # Seconds per phase of this attempt (prepare_data, train, evaluate, export), for telling
    # where a run's time went; not part of the model's metrics.
    timings: dict[str, float] = field(default_factory=dict)


class IncompatibleCheckpoint(Conflict):
    type, title = "incompatible-checkpoint", "The checkpoint belongs to a different run"


def warm_up() -> None:
    """Pay torch's one-time lazy imports (the optimizer's dynamo hooks, TorchScript) now.

    A worker process calls this once at start so a job's first step is not seconds late.
    """
    tiny = nn.Linear(2, 2)
    torch.optim.AdamW(tiny.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(tiny)


# --- one process's run -------------------------------------------------------------------------


class Run:
    def __init__(
        self,
        spec: RunSpec,
        template: Template,
        control: RunControl | None,
        checkpoint: bytes | None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.spec, self.template, self.control = spec, template, control
        self.rank, self.world = rank, world_size
        self.params = spec.params
        self.epochs = spec.max_epochs if spec.max_epochs is not None else int(spec.params["epochs"])
        clock = time.monotonic()
        self.data: PreparedData = self._prepare_data()
        self.timings = {"prepare_data": time.monotonic() - clock}

        torch.manual_seed(spec.seed)
        self.model = self._build_model()
        if spec.init_weights is not None:
            _warm_start(self.model, spec.init_weights)
        # A separate stream for dropout etc., distinct per rank and from the one that built
        # the model.
        torch.manual_seed(_mix(spec.seed, rank, 1))
        random.seed(_mix(spec.seed, rank, 2))
        np.random.seed(_mix(spec.seed, rank, 3) % 2**32)

        self.net: nn.Module = self.model
        if world_size > 1:
            self.net = nn.parallel.DistributedDataParallel(self.model)
        self.optimizer = _optimizer(self.model, spec.params)
        self.criterion = nn.CrossEntropyLoss()
        self.batch = max(1, math.ceil(int(spec.params["batch_size"]) / world_size))
        self.steps_per_epoch = len(self._batches(0))
        self.total_steps = max(1, self.epochs * self.steps_per_epoch)

        self.epoch = 0
        self.position = 0  # batches done in the current epoch
        self.step = 0
        self.epoch_sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
        self.elapsed = 0.0  # training seconds over all attempts (the time budget's clock)
        self.best_accuracy = -1.0
        self.epochs_since_best = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.samples = 0
        if checkpoint is not None:
            self._restore(checkpoint)

    # -- what a task kind replaces (see kiln_training.detection) --

    def _prepare_data(self) -> PreparedData:
        return prepare_data(self.spec.data, self.template.kind, self.spec.params, self.spec.seed)

    def _build_model(self) -> nn.Module:
        return build_network(
            self.template.name, self.spec.params, self.data.input_shape, len(self.data.label_map)
        )

    # -- the loop --

    def run(self) -> RunOutcome:
        outcome = self._loop()
        outcome.timings = {**self.timings, **outcome.timings}
        return outcome

    def _loop(self) -> RunOutcome:
        clock = time.monotonic()
        started = clock - self.elapsed
        self.net.train()
        stop = False
        while self.epoch < self.epochs and not stop:
            batches = self._batches(self.epoch)
            epoch_clock = time.monotonic() - self.epoch_sums["seconds"]
            while self.position < len(batches):
                flag = self._signal(started)
                if flag == CANCEL:
                    return RunOutcome("cancelled", self.step, self.epoch)
                if flag == PAUSE:
                    self.elapsed = time.monotonic() - started
                    self.epoch_sums["seconds"] = time.monotonic() - epoch_clock
                    self._checkpoint()
                    return RunOutcome("paused", self.step, self.epoch)
                if flag == STOP:
                    stop = True
                    break
                self._train_step(batches[self.position], epoch_clock)
                # The epoch's last step is checkpointed after the epoch ends, just below.
                due = self.step % max(1, self.spec.checkpoint_every_steps) == 0
                if due and self.position < len(batches):
                    self.elapsed = time.monotonic() - started
                    self.epoch_sums["seconds"] = time.monotonic() - epoch_clock
                    self._checkpoint()
            if stop:
                break
            stop = self._end_epoch(time.monotonic() - epoch_clock)
            self.elapsed = time.monotonic() - started
            self._checkpoint()
        self.elapsed = time.monotonic() - started
        self.timings["train"] = time.monotonic() - clock
        return self._finish()

    def _train_step(self, indices: torch.Tensor, epoch_clock: float) -> None:
        inputs = self.data.train.inputs[indices]
        targets = self.data.train.targets[indices]
        lr = self._lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.net(inputs)
        loss = self.criterion(logits, targets)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self.position += 1
        n = len(indices)
        loss_value = float(loss.item())
        correct = int((logits.argmax(dim=1) == targets).sum())
        sums = self.epoch_sums
        sums["loss"] += loss_value * n
        sums["correct"] += correct
        sums["seen"] += n
        self.samples += n * self.world
        if self.control is not None:
            seconds = time.monotonic() - epoch_clock
            self.control.on_step(
                StepProgress(
                    epoch=self.epoch,
                    step=self.step,
                    loss=loss_value,
                    lr=lr,
                    samples_per_s=sums["seen"] * self.world / seconds if seconds > 0 else 0.0,
                    accuracy=sums["correct"] / sums["seen"],
                )
            )

    def _end_epoch(self, seconds: float) -> bool:
        """Progress, early stopping; True when training should stop."""
        sums = self.epoch_sums
        eval_loss = eval_accuracy = None
        stop = False
        if self.spec.early_stopping_patience is not None and self.rank == 0:
            logits = self._predict(self.data.eval)
            if len(self.data.eval):
                eval_loss = float(self.criterion(logits, self.data.eval.targets))
                eval_accuracy = float(
                    (logits.argmax(dim=1) == self.data.eval.targets).float().mean()
                )
                if eval_accuracy > self.best_accuracy:
                    self.best_accuracy = eval_accuracy
                    self.epochs_since_best = 0
                    self.best_state = _clone(self.model.state_dict())
                else:
                    self.epochs_since_best += 1
                stop = self.epochs_since_best >= self.spec.early_stopping_patience
        if self.control is not None:
            seen = max(sums["seen"], 1.0)
            self.control.on_epoch(
                EpochProgress(
                    epoch=self.epoch,
                    step=self.step,
                    train_loss=sums["loss"] / seen,
                    train_accuracy=sums["correct"] / seen,
                    eval_loss=eval_loss,
                    eval_accuracy=eval_accuracy,
                    lr=self._lr(max(self.step - 1, 0)),
                    samples_per_s=sums["seen"] * self.world / seconds if seconds > 0 else 0.0,
                    seconds=seconds,
                )
            )
        self.epoch += 1
        self.position = 0
        self.epoch_sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
        return self._share(STOP if stop else GO) == STOP

    def _finish(self) -> RunOutcome:
        if self.rank != 0:
            return RunOutcome("succeeded", self.step, self.epoch)
        if self.best_state is not None:
            # Early stopping keeps the weights of the best evaluated epoch.
            self.model.load_state_dict(self.best_state)
        clock = time.monotonic()
        logits = self._predict(self.data.eval)
        report = evaluate(
            logits, self.data.eval.targets, self.data.label_map, self.data.eval.item_ids
        )
        eval_loss = (
            float(self.criterion(logits, self.data.eval.targets)) if len(self.data.eval) else 0.0
        )
        metrics = {
            "accuracy": report.accuracy,
            "precision_macro": report.precision_macro,
            "recall_macro": report.recall_macro,
            "f1_macro": report.f1_macro,
            "loss": eval_loss,
            "epochs": float(self.epoch),
            "steps": float(self.step),
            "train_seconds": self.elapsed,
            "samples_per_s": self.samples / self.elapsed if self.elapsed > 0 else 0.0,
        }
        exporting = time.monotonic()
        model = export_model(self.model, self.data.label_map, self.data.preprocessing)
        self.timings["evaluate"] = exporting - clock
        self.timings["export"] = time.monotonic() - exporting
        return RunOutcome("succeeded", self.step, self.epoch, metrics, report, model)

    # -- pieces --

    def _batches(self, epoch: int) -> list[torch.Tensor]:
        sampler: DistributedSampler[int] = DistributedSampler(
            range(len(self.data.train)),  # type: ignore[arg-type]
            num_replicas=self.world,
            rank=self.rank,
            shuffle=True,
            seed=self.spec.seed,
        )
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.int64)
        batches = list(torch.split(order, self.batch))
        # Batch norm cannot train on one example; a lone trailing one waits for next epoch.
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches.pop()
        return batches

    def _lr(self, step: int) -> float:
        base = float(self.params["lr"])
        if self.params["lr_schedule"] == "cosine":
            return (
                base
                * 0.5
                * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))
            )
        return base

    def _predict(self, examples: Examples) -> torch.Tensor:
        self.model.eval()
        try:
            with torch.no_grad():
                parts = [
                    self.model(examples.inputs[i : i + EVAL_BATCH])
                    for i in range(0, len(examples), EVAL_BATCH)
                ]
        finally:
            self.model.train()
        if not parts:
            return torch.zeros((0, len(self.data.label_map)))
        return torch.cat(parts)

    def _signal(self, started: float) -> int:
        flag = GO
        if self.rank == 0:
            request = self.control.requested() if self.control is not None else None
            if request == "cancel":
                flag = CANCEL
            elif request == "pause":
                flag = PAUSE
            elif (
                self.spec.time_budget_s is not None
                and time.monotonic() - started >= self.spec.time_budget_s
            ):
                flag = STOP
        return self._share(flag)

    def _share(self, flag: int) -> int:
        """Rank 0's flag, on every rank."""
        if self.world == 1:
            return flag
        tensor = torch.tensor([flag], dtype=torch.int64)
        dist.broadcast(tensor, src=0)
        return int(tensor.item())

    # -- checkpoints --

    def _checkpoint(self) -> None:
        clock = time.monotonic()
        try:
            self._write_checkpoint()
        finally:
            spent = time.monotonic() - clock
            self.timings["checkpoint"] = self.timings.get("checkpoint", 0.0) + spent

    def _write_checkpoint(self) -> None:
        rng = _rng_state()
        if self.world > 1:
            states: list[Any] = [None] * self.world
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        if self.rank != 0 or self.control is None:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "template": self.template.name,
            "seed": self.spec.seed,
            "world_size": self.world,
            "epoch": self.epoch,
            "position": self.position,
            "step": self.step,
            "samples": self.samples,
            "epoch_sums": dict(self.epoch_sums),
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": states,
            "best_accuracy": self.best_accuracy,
            "epochs_since_best": self.epochs_since_best,
            "best_state": self.best_state,
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.control.save_checkpoint(buffer.getvalue(), self.step)

    def _restore(self, data: bytes) -> None:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        mine = (CHECKPOINT_FORMAT, self.template.name, self.spec.seed, self.world)
        theirs = tuple(state.get(k) for k in ("format", "template", "seed", "world_size"))
        if theirs != mine:
            raise IncompatibleCheckpoint(
                f"checkpoint is for (format, template, seed, world size) {theirs}, run is {mine}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.position, self.step = state["epoch"], state["position"], state["step"]
        self.samples = state["samples"]
        self.epoch_sums = {k: float(v) for k, v in state["epoch_sums"].items()}
        self.elapsed = float(state["elapsed"])
        self.best_accuracy = float(state["best_accuracy"])
        self.epochs_since_best = int(state["epochs_since_best"])
        self.best_state = state["best_state"]
        _set_rng_state(state["rng"][self.rank])


def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    _kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    assert isinstance(keys, np.ndarray)
    return {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _mix(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % 2**63
    return value


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _warm_start(model: nn.Module, data: bytes) -> None:
    """Copy every tensor of ``data`` whose name and shape match; the rest keep their init."""
    incoming = load_state_dict(data)
    own = model.state_dict()
    matched = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict({**own, **matched})


def _optimizer(model: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
    lr, decay = float(params["lr"]), float(params["weight_decay"])
    name = params["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=float(params["momentum"]), weight_decay=decay
        )
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)


# --- data-parallel -----------------------------------------------------------------------------
