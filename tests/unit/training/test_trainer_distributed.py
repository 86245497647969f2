"""Data-parallel runs: two gloo ranks on this machine, rank 0 in the calling process."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from kiln_training.templates import get_template, validate_params
from kiln_training.trainer import RunSpec, run_training
from tests.unit.training.synthetic import ScriptedControl, tabular_rows, write_version


def _spec(tmp_path: Path, epochs: int) -> RunSpec:
    template = get_template("tabular-mlp")
    return RunSpec(
        template="tabular-mlp",
        params=validate_params(template, {"epochs": epochs, "batch_size": 16, "dropout": 0.1}),
        seed=3,
        data=write_version(tmp_path, tabular_rows(90)),
        world_size=2,
        checkpoint_every_steps=4,
    )


def test_two_ranks_converge_and_resume_bit_identically_with_a_valid_model(tmp_path: Path) -> None:
    spec = _spec(tmp_path, epochs=6)
    straight = run_training(spec, ScriptedControl())
    control = ScriptedControl(pause_at_step=6)
    paused = run_training(spec, control)
    assert paused.status == "paused" and paused.step == 6
    assert control.saved_steps[-1] == 6

    outcome = run_training(spec, control)
    assert outcome.status == "succeeded"
    # 72 train items over 2 ranks at 8 per rank: 5 steps per epoch.
    assert outcome.step == 6 * 5 and control.steps[6].step == 7
    assert outcome.metrics["accuracy"] >= 0.9
    assert outcome.model is not None and straight.model is not None
    # Every rank's RNG state and data position are restored, so dropout and order replay.
    ours = torch.load(io.BytesIO(outcome.model.state_dict), weights_only=True)
    theirs = torch.load(io.BytesIO(straight.model.state_dict), weights_only=True)
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    assert outcome.metrics["loss"] == straight.metrics["loss"]
    served = torch.jit.load(io.BytesIO(outcome.model.torchscript))
    assert served(torch.zeros(3, 4)).shape == (3, 3)


def test_cancel_reaches_every_rank(tmp_path: Path) -> None:
    control = ScriptedControl(cancel_at_step=2)
    outcome = run_training(_spec(tmp_path, epochs=500), control)
    # Returning at all means rank 1 stopped too: the run waits for its child processes.
    assert outcome.status == "cancelled" and outcome.step == 2
