"""The template catalogue and hyperparameter validation."""

from __future__ import annotations

import pytest

from kiln_training.templates import (
    TEMPLATES,
    InvalidHyperparameters,
    UnknownTemplate,
    get_template,
    validate_params,
)


def test_catalogue_has_the_four_templates_with_common_hyperparameters() -> None:
    assert set(TEMPLATES) == {
        "detection-fcos",
        "image-cnn",
        "image-resnet18",
        "tabular-mlp",
        "text-embeddingbag",
    }
    for template in TEMPLATES.values():
        assert {"epochs", "batch_size", "lr", "optimizer", "weight_decay"} <= set(template.params)
        for name, spec in template.params.items():
            # Every default must itself be valid.
            assert validate_params(template, {name: spec.default})[name] == spec.default


def test_unknown_template_names_the_valid_ones() -> None:
    with pytest.raises(UnknownTemplate) as info:
        get_template("gpt-5")
    assert info.value.status == 404
    assert info.value.problem()["valid"] == sorted(TEMPLATES)
    assert "image-cnn" in info.value.detail


def test_defaults_are_filled_and_values_coerced() -> None:
    params = validate_params(
        get_template("image-cnn"), {"epochs": 3.0, "lr": "0.01", "image_size": "16"}
    )
    assert params["epochs"] == 3 and isinstance(params["epochs"], int)
    assert params["lr"] == 0.01
    assert params["image_size"] == 16
    assert params["width"] == get_template("image-cnn").params["width"].default


def test_every_bad_field_is_reported_in_one_error() -> None:
    with pytest.raises(InvalidHyperparameters) as info:
        validate_params(
            get_template("tabular-mlp"),
            {
                "epochs": 0,
                "lr": "fast",
                "optimizer": "lbfgs",
                "layers": 2.5,
                "batch_size": True,
                "colour": "red",
            },
        )
    error = info.value
    assert error.status == 422 and error.type == "invalid-hyperparameters"
    fields = {e["field"]: e["message"] for e in error.problem()["errors"]}
    assert set(fields) == {"epochs", "lr", "optimizer", "layers", "batch_size", "colour"}
    assert "at least 1" in fields["epochs"]
    assert "one of" in fields["optimizer"]
    assert "unknown hyperparameter" in fields["colour"]
    for name in fields:
        assert name in error.detail


def test_out_of_range_and_non_finite_values_are_rejected() -> None:
    template = get_template("text-embeddingbag")
    for bad in ({"buckets": 8}, {"lr": 2.0}, {"lr": float("nan")}, {"embed_dim": None}):
        with pytest.raises(InvalidHyperparameters):
            validate_params(template, bad)
