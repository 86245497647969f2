"""The catalogue of training templates and validation of their hyperparameters.

A template names a model family and the task it solves; it declares every hyperparameter a job
may set, with its type, range and default. :func:`validate_params` turns what a user sent into
a complete, typed parameter dict (defaults filled in) or raises one
:class:`InvalidHyperparameters` naming every bad field, so a job never starts with parameters
the trainer would choke on.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field

from kiln_core.errors import KilnError

ParamType = Literal["int", "float", "str", "bool", "choice"]
TaskKind = Literal[
    "image-classification", "tabular-classification", "text-classification", "object-detection"
]


class UnknownTemplate(KilnError):
    status, type, title = 404, "unknown-template", "Unknown training template"


class InvalidHyperparameters(KilnError):
    """Carries ``errors``: a list of ``{"field", "message"}``, one per bad hyperparameter."""

    status, type, title = 422, "invalid-hyperparameters", "Invalid hyperparameters"


class ParamSpec(BaseModel):
    """One hyperparameter: its type, default and allowed values."""

    type: ParamType
    default: Any
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None
    log: bool = Field(default=False, description="sample on a log scale in random search")
    description: str = ""


class Template(BaseModel):
    """A model family for one task, with the hyperparameters it accepts."""

    name: str
    task: TaskKind
    description: str
    params: dict[str, ParamSpec]

    @property
    def kind(self) -> Literal["image", "tabular", "text"]:
        """The kind of input the template reads (``image``, ``tabular`` or ``text``)."""
        if self.task == "object-detection":
            return "image"
        return self.task.split("-", 1)[0]  # type: ignore[return-value]


def _optim_params(
    lr: float, weight_decay: float, epochs: int = 10, batch_size: int = 32
) -> dict[str, ParamSpec]:
    return {
        "epochs": ParamSpec(
            type="int", default=epochs, min=1, max=1000, description="passes over the train split"
        ),
        "batch_size": ParamSpec(
            type="int",
            default=batch_size,
            min=1,
            max=4096,
            log=True,
            description="examples per step (split across processes when data-parallel)",
        ),
        "lr": ParamSpec(
            type="float", default=lr, min=1e-6, max=1.0, log=True, description="learning rate"
        ),
        "optimizer": ParamSpec(type="choice", default="adamw", choices=["adamw", "adam", "sgd"]),
        "momentum": ParamSpec(
            type="float", default=0.9, min=0.0, max=0.999, description="SGD momentum"
        ),
        "weight_decay": ParamSpec(type="float", default=weight_decay, min=0.0, max=1.0),
        "lr_schedule": ParamSpec(
            type="choice",
            default="cosine",
            choices=["constant", "cosine"],
            description="cosine decays the learning rate to 0 over all steps",
        ),
    }


def _image_params(width: int) -> dict[str, ParamSpec]:
    return {
        "image_size": ParamSpec(
            type="int",
            default=32,
            min=4,
            max=512,
            description="images are resized to image_size × image_size",
        ),
        "image_mode": ParamSpec(
            type="choice", default="RGB", choices=["RGB", "L"], description="colour or grey"
        ),
        "width": ParamSpec(
            type="int", default=width, min=2, max=512, log=True, description="channels of stage 1"
        ),
    }


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template(
            name="image-cnn",
            task="image-classification",
            description="A small CNN: two conv blocks (width, 2×width channels), 2×2 average"
            " pooling and a linear head. Fast; works on images from 4×4 up.",
            params={
                **_optim_params(lr=3e-3, weight_decay=1e-4),
                **_image_params(width=16),
                "dropout": ParamSpec(type="float", default=0.0, min=0.0, max=0.9),
            },
        ),
        Template(
            name="image-resnet18",
            task="image-classification",
            description="ResNet-18 layout (four stages of two basic blocks, batch norm) with a"
            " 3×3 stem and no max-pool so tiny images work; width 64 is the original network.",
            params={**_optim_params(lr=1e-3, weight_decay=1e-4), **_image_params(width=16)},
        ),
        Template(
            name="tabular-mlp",
            task="tabular-classification",
            description="A multi-layer perceptron over standardised numeric features.",
            params={
                **_optim_params(lr=3e-3, weight_decay=1e-4),
                "hidden_size": ParamSpec(type="int", default=64, min=2, max=4096, log=True),
                "layers": ParamSpec(
                    type="int", default=2, min=0, max=8, description="hidden layers"
                ),
                "dropout": ParamSpec(type="float", default=0.0, min=0.0, max=0.9),
            },
        ),
        Template(
            name="text-embeddingbag",
            task="text-classification",
            description="Mean of hashed token embeddings (nn.EmbeddingBag) and a linear head:"
            " lower-cased whitespace tokens hashed with CRC-32 into `buckets`.",
            params={
                **_optim_params(lr=1e-2, weight_decay=0.0),
                "embed_dim": ParamSpec(type="int", default=64, min=2, max=1024, log=True),
                "buckets": ParamSpec(
                    type="int",
                    default=2**16,
                    min=16,
                    max=2**22,
                    log=True,
                    description="hash buckets for tokens",
                ),
            },
        ),
        Template(
            name="detection-fcos",
            task="object-detection",
            description="torchvision's FCOS (anchor-free one-stage detector, focal and GIoU"
            " losses, no pretrained weights) on a five-block conv backbone with one stride-8"
            " feature map: for small objects on small images, trains on CPUs in minutes.",
            params={
                **_optim_params(lr=3e-3, weight_decay=1e-4, epochs=12, batch_size=16),
                "input_size": ParamSpec(
                    type="int",
                    default=64,
                    min=32,
                    max=1024,
                    description="images are resized so their longer side is input_size",
                ),
                "image_mode": ParamSpec(
                    type="choice", default="RGB", choices=["RGB", "L"], description="colour or grey"
                ),
                "width": ParamSpec(
                    type="int", default=32, min=4, max=256, log=True, description="backbone width"
                ),
                "anchor_size": ParamSpec(
                    type="int",
                    default=8,
                    min=2,
                    max=512,
                    description="pixels (at input_size) of a location's reference box: sets the"
                    " centre-sampling radius (1.5×) and the box-regression scale",
                ),
                "head_convs": ParamSpec(
                    type="int",
                    default=2,
                    min=1,
                    max=4,
                    description="conv layers in each of FCOS's head branches (torchvision: 4)",
                ),
                "warmup_steps": ParamSpec(
                    type="int",
                    default=50,
                    min=0,
                    max=100000,
                    description="steps over which the learning rate ramps up linearly from 0",
                ),
                "score_threshold": ParamSpec(
                    type="float",
                    default=0.05,
                    min=0.0,
                    max=1.0,
                    description="detections below this score are dropped",
                ),
                "nms_threshold": ParamSpec(
                    type="float",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    description="IoU above which a lower-scored box of a class is suppressed",
                ),
                "max_detections": ParamSpec(
                    type="int", default=20, min=1, max=1000, description="boxes per image at most"
                ),
                "augment": ParamSpec(
                    type="bool",
                    default=True,
                    description="box-aware zoom and brightness/contrast jitter at train time",
                ),
                "hflip": ParamSpec(
                    type="bool", default=False, description="also flip images horizontally"
                ),
                "classes": ParamSpec(
                    type="str",
                    default="",
                    description="the label map, comma-separated; empty: the version's box"
                    " classes, sorted. A box of another class fails the job",
                ),
            },
        ),
    ]
}


def get_template(name: str) -> Template:
    """The template called ``name``; raises :class:`UnknownTemplate` listing the valid names."""
    try:
        return TEMPLATES[name]
    except KeyError:
        valid = sorted(TEMPLATES)
        raise UnknownTemplate(
            f"unknown template {name!r}; valid templates: {', '.join(valid)}", valid=valid
        ) from None


def validate_params(template: Template, params: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of ``template``: ``params`` checked and coerced, defaults filled in.

    Raises one :class:`InvalidHyperparameters` whose ``errors`` lists every unknown name, wrong
    type and out-of-range value.
    """
    errors: list[dict[str, str]] = []
    for name in sorted(set(params) - set(template.params)):
        errors.append(
            {
                "field": name,
                "message": f"unknown hyperparameter for {template.name};"
                f" known: {', '.join(sorted(template.params))}",
            }
        )
    result: dict[str, Any] = {}
    for name, spec in template.params.items():
        if name not in params:
            result[name] = spec.default
            continue
        try:
            result[name] = _coerce(spec, params[name])
        except ValueError as exc:
            errors.append({"field": name, "message": str(exc)})
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidHyperparameters(
            f"invalid hyperparameters for {template.name}: {summary}", errors=errors
        )
    return result


def _coerce(spec: ParamSpec, value: Any) -> Any:
    if spec.type == "choice":
        if value not in (spec.choices or []):
            raise ValueError(f"must be one of {spec.choices}, not {value!r}")
        return value
    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"must be a boolean, not {value!r}")
    if spec.type == "str":
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {value!r}")
        return value
    number = _number(spec.type, value)
    if spec.min is not None and number < spec.min:
        raise ValueError(f"must be at least {_fmt(spec.min)}, not {value!r}")
    if spec.max is not None and number > spec.max:
        raise ValueError(f"must be at most {_fmt(spec.max)}, not {value!r}")
    return number


def _number(kind: str, value: Any) -> int | float:
    # JSON has no int/bool distinction problems, but Python does: True is an int.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be {'an integer' if kind == 'int' else 'a number'}, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(
            f"must be {'an integer' if kind == 'int' else 'a number'}, not {value!r}"
        ) from None
    if not math.isfinite(number):
        raise ValueError(f"must be finite, not {value!r}")
    if kind == "int":
        if not number.is_integer():
            raise ValueError(f"must be an integer, not {value!r}")
        return int(number)
    return number


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)
