"""run_training on tiny synthetic versions in a file:// store: reproducibility, pause/resume,
cancel, budgets, early stopping, warm starts, and every template learning something."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from kiln_training.evaluation import EvaluationReport
from kiln_training.examples import DataRef, UnusableData, prepare_data, split_items
from kiln_training.templates import get_template, validate_params
from kiln_training.trainer import (
    IncompatibleCheckpoint,
    RunOutcome,
    RunSpec,
    plain_training_loop,
    run_training,
)
from tests.unit.training.synthetic import (
    Sample,
    ScriptedControl,
    colour_images,
    digit_images,
    tabular_rows,
    texts,
    write_version,
)


def _spec(template: str, data: DataRef, seed: int = 7, **params: Any) -> RunSpec:
    return RunSpec(
        template=template,
        params=validate_params(get_template(template), params),
        seed=seed,
        data=data,
        num_threads=1,
    )


def _weights(outcome: RunOutcome) -> dict[str, torch.Tensor]:
    assert outcome.model is not None
    loaded: dict[str, torch.Tensor] = torch.load(
        io.BytesIO(outcome.model.state_dict), weights_only=True
    )
    return loaded


def _assert_identical(a: RunOutcome, b: RunOutcome) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "loss", "steps"):
        assert a.metrics[key] == b.metrics[key], key
    assert isinstance(a.evaluation, EvaluationReport)
    assert isinstance(b.evaluation, EvaluationReport)
    assert a.evaluation.confusion == b.evaluation.confusion
    assert a.evaluation.bad_cases == b.evaluation.bad_cases


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DataRef:
    return write_version(tmp_path_factory.mktemp("digits"), digit_images(80))


def test_digits_smoke_trains_an_accurate_cnn_with_full_metrics(digits: DataRef) -> None:
    control = ScriptedControl()
    spec = _spec("image-cnn", digits, epochs=8, batch_size=8, image_size=8, image_mode="L", lr=0.01)
    threads = torch.get_num_threads()
    outcome = run_training(spec, control)
    assert torch.get_num_threads() == threads  # the run's thread count is restored
    assert outcome.status == "succeeded"
    assert outcome.metrics["accuracy"] >= 0.9
    assert set(outcome.metrics) >= {
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "loss",
        "epochs",
        "steps",
        "train_seconds",
        "samples_per_s",
    }
    assert outcome.metrics["epochs"] == 8 and outcome.step == 8 * 8
    assert [e.epoch for e in control.epochs] == list(range(8))
    assert len(control.steps) == outcome.step
    assert control.steps[-1].lr < control.steps[0].lr  # cosine schedule
    assert control.epochs[-1].train_loss < control.epochs[0].train_loss
    assert outcome.evaluation is not None and outcome.evaluation.support == 16
    assert outcome.model is not None and outcome.model.label_map == ["d0", "d1", "d2", "d3"]
    # Checkpoints every 50 steps and at every epoch end.
    assert 50 in control.saved_steps and 64 in control.saved_steps


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(digits: DataRef) -> None:
    a = run_training(_spec("image-cnn", digits, epochs=2, image_size=8), ScriptedControl())
    b = run_training(_spec("image-cnn", digits, epochs=2, image_size=8), ScriptedControl())
    c = run_training(_spec("image-cnn", digits, seed=8, epochs=2, image_size=8), ScriptedControl())
    _assert_identical(a, b)
    assert not torch.equal(_weights(a)["head.1.weight"], _weights(c)["head.1.weight"])


@pytest.mark.parametrize(
    ("template", "params", "pause_at"),
    [
        ("image-resnet18", {"image_size": 8, "width": 4, "batch_size": 8}, 11),
        ("tabular-mlp", {"batch_size": 8, "dropout": 0.3, "optimizer": "sgd"}, 5),
    ],
)
def test_pause_then_resume_is_bit_identical_to_an_uninterrupted_run(
    tmp_path: Path, template: str, params: dict[str, Any], pause_at: int
) -> None:
    samples = colour_images(40) if template.startswith("image") else tabular_rows(60)
    data = write_version(tmp_path, samples)
    spec = _spec(template, data, epochs=3, **params)
    straight_control = ScriptedControl()
    straight = run_training(spec, straight_control)

    control = ScriptedControl(pause_at_step=pause_at)
    paused = run_training(spec, control)
    assert paused.status == "paused" and paused.step == pause_at and paused.model is None
    assert control.saved_steps[-1] == pause_at
    # A fresh call (as after a worker restart) picks the checkpoint up from the control.
    resumed = run_training(spec, control)
    assert resumed.status == "succeeded"
    assert control.steps[pause_at].step == pause_at + 1  # continued where it stopped
    _assert_identical(straight, resumed)
    # Progress of the interrupted epoch covers the whole epoch, as without a pause.
    assert [e.train_loss for e in control.epochs] == [e.train_loss for e in straight_control.epochs]
    assert [s.loss for s in control.steps] == [s.loss for s in straight_control.steps]


def test_cancel_returns_promptly_without_a_model(digits: DataRef) -> None:
    control = ScriptedControl(cancel_at_step=3)
    outcome = run_training(_spec("image-cnn", digits, epochs=50, image_size=8), control)
    assert outcome.status == "cancelled" and outcome.step == 3 and outcome.model is None
    assert len(control.steps) == 3


def test_epoch_and_time_budgets_stop_as_succeeded(digits: DataRef) -> None:
    spec = _spec("image-cnn", digits, epochs=50, image_size=8)
    spec.max_epochs = 2
    outcome = run_training(spec, ScriptedControl())
    assert outcome.status == "succeeded" and outcome.metrics["epochs"] == 2

    spec = _spec("image-cnn", digits, epochs=1000, image_size=8)
    spec.time_budget_s = 0.0
    outcome = run_training(spec, ScriptedControl())
    assert outcome.status == "succeeded" and outcome.step == 0 and outcome.model is not None


def test_early_stopping_stops_after_patience_and_keeps_the_best_epoch(digits: DataRef) -> None:
    spec = _spec("image-cnn", digits, epochs=40, image_size=8, lr=0.02, lr_schedule="constant")
    spec.early_stopping_patience = 2
    control = ScriptedControl()
    outcome = run_training(spec, control)
    accuracies = [e.eval_accuracy for e in control.epochs]
    assert all(a is not None for a in accuracies)
    best = max(a for a in accuracies if a is not None)
    assert len(control.epochs) < 40
    assert accuracies[-3] == best and all(a is not None and a <= best for a in accuracies[-2:])
    assert outcome.metrics["accuracy"] == pytest.approx(best)


def test_warm_start_loads_matching_weights(digits: DataRef) -> None:
    first = run_training(_spec("image-cnn", digits, epochs=3, image_size=8), ScriptedControl())
    assert first.model is not None
    spec = _spec("image-cnn", digits, seed=99, epochs=1, image_size=8)
    spec.time_budget_s = 0.0  # no training: the exported weights are the loaded ones
    spec.init_weights = first.model.state_dict
    warm = run_training(spec, ScriptedControl())
    for name, tensor in _weights(first).items():
        assert torch.equal(tensor, _weights(warm)[name]), name
    assert warm.metrics["accuracy"] == first.metrics["accuracy"]


def test_a_checkpoint_of_another_run_is_refused(digits: DataRef) -> None:
    control = ScriptedControl(pause_at_step=2)
    run_training(_spec("image-cnn", digits, epochs=2, image_size=8), control)
    with pytest.raises(IncompatibleCheckpoint):
        run_training(_spec("image-cnn", digits, seed=1, epochs=2, image_size=8), control)


@pytest.mark.parametrize(
    ("template", "samples", "params"),
    [
        ("tabular-mlp", tabular_rows(90), {"epochs": 15, "batch_size": 16}),
        ("text-embeddingbag", texts(90), {"epochs": 15, "batch_size": 8, "buckets": 1024}),
    ],
)
def test_tabular_and_text_templates_learn_their_toy_tasks(
    tmp_path: Path, template: str, samples: list[Sample], params: dict[str, Any]
) -> None:
    outcome = run_training(
        _spec(template, write_version(tmp_path, samples), **params), ScriptedControl()
    )
    assert outcome.metrics["accuracy"] >= 0.9


def test_a_version_without_splits_is_split_80_20_by_seed(tmp_path: Path) -> None:
    data = write_version(tmp_path, tabular_rows(50, splits=False))
    template = get_template("tabular-mlp")
    params = validate_params(template, {})
    a = prepare_data(data, "tabular", params, seed=1)
    b = prepare_data(data, "tabular", params, seed=1)
    c = prepare_data(data, "tabular", params, seed=2)
    assert (len(a.train), len(a.eval)) == (40, 10)
    assert a.eval.item_ids == b.eval.item_ids != c.eval.item_ids
    assert not set(a.train.item_ids) & set(a.eval.item_ids)


def test_split_rules_fall_back_to_test_then_to_a_holdout(tmp_path: Path) -> None:
    data = write_version(tmp_path, tabular_rows(10))
    from kiln_data import load_manifest

    items = load_manifest(data.storage_url, data.manifest_key)
    for item in items[:2]:
        item.split = "test"
    train, evaluation = split_items(items, "train", "val", seed=0)
    assert {i.split for i in evaluation} == {"val"}
    only_test = [i for i in items if i.split != "val"]
    train, evaluation = split_items(only_test, "train", "val", seed=0)
    assert {i.split for i in evaluation} == {"test"}
    only_train = [i for i in items if i.split == "train"]
    train, evaluation = split_items(only_train, "train", "val", seed=0)
    assert len(evaluation) == 1 and len(train) == len(only_train) - 1


def test_a_version_with_one_class_is_unusable(tmp_path: Path) -> None:
    samples = [s for s in tabular_rows(12) if s.label == "blob0"]
    with pytest.raises(UnusableData):
        run_training(_spec("tabular-mlp", write_version(tmp_path, samples)), ScriptedControl())


def test_plain_training_loop_runs_the_same_training_without_the_platform(digits: DataRef) -> None:
    seconds = plain_training_loop(_spec("image-cnn", digits, epochs=2, image_size=8))
    assert seconds > 0


def test_a_run_killed_mid_epoch_resumes_from_its_last_periodic_checkpoint_exactly(
    tmp_path: Path,
) -> None:
    data = write_version(tmp_path, tabular_rows(60))
    spec = _spec("tabular-mlp", data, epochs=3, batch_size=8, dropout=0.2)
    spec.checkpoint_every_steps = 4
    straight_control = ScriptedControl()
    straight = run_training(spec, straight_control)
    # 6 steps per epoch: step 8 is mid-epoch; pretend the worker died after step 9.
    assert {4, 6, 8, 12} <= set(straight_control.saved_steps)
    survivor = ScriptedControl(checkpoint=straight_control.saved[8])
    resumed = run_training(spec, survivor)
    assert survivor.steps[0].step == 9
    _assert_identical(straight, resumed)
