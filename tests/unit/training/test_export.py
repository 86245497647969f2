"""Exported models: TorchScript equals the eager model, and ``preprocess`` on raw inputs gives
exactly the tensors training used."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kiln_training.examples import prepare_data
from kiln_training.export import export_model, pad_tokens, preprocess, signature_for
from kiln_training.networks import build_network
from kiln_training.templates import get_template, validate_params
from tests.unit.training.synthetic import (
    Sample,
    colour_images,
    digit_images,
    tabular_rows,
    texts,
    write_version,
)

CASES = [
    ("image-cnn", colour_images(20, size=12), {"image_size": 8, "dropout": 0.5}),
    ("image-resnet18", digit_images(20), {"image_size": 8, "image_mode": "L", "width": 4}),
    ("tabular-mlp", tabular_rows(20), {"layers": 3, "dropout": 0.2}),
    ("text-embeddingbag", texts(20), {"buckets": 256, "embed_dim": 8}),
]


@pytest.mark.parametrize(("template_name", "samples", "params"), CASES)
def test_preprocess_of_raw_inputs_reproduces_training_tensors_and_torchscript_matches(
    tmp_path: Path, template_name: str, samples: list[Sample], params: dict[str, Any]
) -> None:
    template = get_template(template_name)
    full = validate_params(template, params)
    data = prepare_data(write_version(tmp_path, samples), template.kind, full, seed=0)
    raw = {s.item_id: s.raw for s in samples}

    # Serving's preprocessing of the raw blob equals what training fed the model.
    rows = [preprocess(data.preprocessing, raw[i]) for i in data.train.item_ids]
    if template.kind == "text":
        rebuilt = pad_tokens(rows)
        assert torch.equal(rebuilt, data.train.inputs[:, : rebuilt.shape[1]])
        assert not data.train.inputs[:, rebuilt.shape[1] :].any()
    else:
        assert torch.equal(torch.from_numpy(np.stack(rows)), data.train.inputs)

    torch.manual_seed(0)
    model = build_network(template.name, full, data.input_shape, len(data.label_map))
    model.train()
    # Move batch-norm statistics off their defaults so eval mode is really exercised.
    model(data.train.inputs[:8])
    exported = export_model(model, data.label_map, data.preprocessing)
    assert model.training  # export leaves the caller's mode alone

    served = torch.jit.load(io.BytesIO(exported.torchscript))
    model.eval()
    batch = data.eval.inputs
    with torch.no_grad():
        assert torch.equal(served(batch), model(batch))
    assert served(batch).shape == (len(batch), len(data.label_map))

    fields = exported.artifact_fields()
    assert fields["label_map"] == data.label_map
    assert (
        fields["signature"] == signature_for(data.preprocessing, len(data.label_map)).model_dump()
    )
    spec = exported.signature.inputs[0]
    if template.kind == "image":
        assert spec.dtype == "FP32" and spec.shape == data.input_shape
        assert fields["preprocessing"]["size"] == [8, 8]
    elif template.kind == "tabular":
        assert spec.dtype == "FP32" and spec.shape == [4]
    else:
        assert spec.dtype == "INT64" and spec.shape == [-1]
        assert fields["preprocessing"] == {"kind": "text", "buckets": 256, "hash": "crc32"}
    weights = torch.load(io.BytesIO(exported.state_dict), weights_only=True)
    assert weights.keys() == model.state_dict().keys()


def test_padding_does_not_change_a_text_models_output() -> None:
    template = get_template("text-embeddingbag")
    model = build_network("text-embeddingbag", validate_params(template, {}), [-1], 3).eval()
    short = torch.tensor([[5, 9, 2]])
    padded = torch.tensor([[5, 9, 2, 0, 0, 0, 0]])
    assert torch.equal(model(short), model(padded))


def test_tabular_preprocess_accepts_lists_json_and_csv_and_checks_width() -> None:
    from kiln_core.catalog import Preprocessing

    pre = Preprocessing(kind="tabular", mean=[1.0, 2.0], std=[2.0, 4.0])
    expected = np.array([0.5, 0.5], dtype=np.float32)
    for raw in ([2, 4], "[2, 4]", b"2,4\n"):
        assert np.array_equal(preprocess(pre, raw), expected)
    with pytest.raises(ValueError):
        preprocess(pre, [1, 2, 3])
    with pytest.raises(ValueError):
        preprocess(pre, "a,b")
