"""A project's label schema, and validation of submitted annotations against it.

Labels use the unified manifest format (:mod:`kiln_core.manifest`): absolute pixels, origin at
the top-left corner, boxes ``[x, y, width, height]``, polygons as flat ``x, y`` rings, masks as
COCO RLE with ``size = [height, width]``, keypoints as flat ``x, y, visibility`` triples.

:func:`validate_annotation` checks every label and reports every problem it finds (up to
:data:`MAX_REPORTED_ERRORS`) as :class:`AnnotationInvalid`, whose problem details name each wrong
field by its index path, e.g. ``labels[2].bbox[2]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from kiln_core.errors import ValidationFailed
from kiln_core.manifest import (
    BoxLabel,
    ClassLabel,
    KeypointsLabel,
    Label,
    MaskLabel,
    PolygonLabel,
    Rle,
)

SchemaKind = Literal["classification", "boxes", "polygons", "masks", "keypoints"]

LABEL_TYPE_OF_KIND: dict[str, str] = {
    "classification": "class",
    "boxes": "box",
    "polygons": "polygon",
    "masks": "mask",
    "keypoints": "keypoints",
}

# How far (in pixels) a coordinate may lie outside the image: tools snap to pixel centres or edges.
EDGE_TOLERANCE = 0.5
MAX_REPORTED_ERRORS = 50
# The self-intersection check is quadratic in the ring length; this bounds the work per request.
MAX_RING_POINTS = 5000

AttributeValue = str | int | float | bool
LABEL_MODELS = (ClassLabel, BoxLabel, PolygonLabel, MaskLabel, KeypointsLabel)
_label_adapter: TypeAdapter[Label] = TypeAdapter(Label)


class LabelDef(BaseModel):
    """One label a project's annotators may use."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    color: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")
    description: str | None = Field(default=None, max_length=2000)


class LabelSchema(BaseModel):
    """What a project's annotations may contain.

    ``attributes`` maps an attribute name to its allowed values (an empty list allows any value);
    a label may carry only attributes the schema defines.
    """

    model_config = ConfigDict(extra="forbid")

    kind: SchemaKind
    labels: list[LabelDef] = Field(min_length=1, max_length=1000)
    multi_label: bool = Field(default=False, description="classification only")
    keypoint_names: list[str] = Field(default_factory=list, description="keypoints only")
    min_box_size: float | None = Field(default=None, ge=0, description="boxes only, in pixels")
    attributes: dict[str, list[AttributeValue]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> LabelSchema:
        names = [label.name for label in self.labels]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"label names must be unique; repeated: {duplicates}")
        if self.multi_label and self.kind != "classification":
            raise ValueError("multi_label applies only to classification schemas")
        if self.kind == "keypoints":
            if not self.keypoint_names:
                raise ValueError("a keypoints schema needs keypoint_names")
            if len(set(self.keypoint_names)) != len(self.keypoint_names):
                raise ValueError("keypoint_names must be unique")
        elif self.keypoint_names:
            raise ValueError("keypoint_names applies only to keypoints schemas")
        if self.min_box_size is not None and self.kind != "boxes":
            raise ValueError("min_box_size applies only to boxes schemas")
        return self

    @property
    def label_type(self) -> str:
        """The manifest label ``type`` this schema accepts."""
        return LABEL_TYPE_OF_KIND[self.kind]

    def label_names(self) -> set[str]:
        return {label.name for label in self.labels}


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class AnnotationInvalid(ValidationFailed):
    """Submitted labels break the project's label schema; ``errors`` names each wrong field."""

    type, title = "annotation-invalid", "Annotation does not match the label schema"

    def __init__(self, errors: Sequence[FieldError], truncated: bool = False) -> None:
        self.errors = list(errors)
        first = self.errors[0] if self.errors else FieldError("labels", "invalid")
        more = len(self.errors) - 1
        detail = f"{first.field}: {first.message}"
        if more or truncated:
            detail += f" (and {more}{'+' if truncated else ''} more)"
        super().__init__(detail, errors=[e.as_dict() for e in self.errors], truncated=truncated)


class _Errors:
    """Collects field errors, stopping at the cap so one huge bad label cannot flood a response."""

    def __init__(self, limit: int = MAX_REPORTED_ERRORS) -> None:
        self.items: list[FieldError] = []
        self.limit = limit
        self.truncated = False

    def add(self, field: str, message: str) -> None:
        if len(self.items) >= self.limit:
            self.truncated = True
            return
        self.items.append(FieldError(field, message))

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit


def validate_annotation(
    schema: LabelSchema,
    labels: Sequence[dict[str, Any] | Label],
    width: int,
    height: int,
) -> list[Label]:
    """Parse and check ``labels`` for an image of ``width`` × ``height`` pixels.

    Returns the parsed labels; raises :class:`AnnotationInvalid` listing every problem found.
    An empty list is valid except for single-label classification, which needs exactly one label.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    errors = _Errors()
    names = schema.label_names()
    parsed: list[Label | None] = []
    for index, raw in enumerate(labels):
        if errors.full:
            errors.truncated = True
            break
        label = _parse(raw, f"labels[{index}]", errors)
        parsed.append(label)
        if label is not None:
            _check_label(schema, names, label, f"labels[{index}]", width, height, errors)
    _check_label_set(schema, parsed, errors)
    if errors.items:
        raise AnnotationInvalid(errors.items, truncated=errors.truncated)
    return [label for label in parsed if label is not None]


# --- parsing -------------------------------------------------------------------------------------


def _parse(raw: Any, path: str, errors: _Errors) -> Label | None:
    if isinstance(raw, LABEL_MODELS):
        return raw
    try:
        return _label_adapter.validate_python(raw)
    except ValidationError as exc:
        _report_parse_errors(raw, exc, path, errors)
        return None


def _report_parse_errors(raw: Any, exc: ValidationError, path: str, errors: _Errors) -> None:
    tag = raw.get("type") if isinstance(raw, dict) else None
    counts_union_reported = False
    for error in exc.errors():
        kind, loc = error["type"], list(error["loc"])
        if kind in ("union_tag_not_found", "union_tag_invalid"):
            expected = ", ".join(repr(t) for t in LABEL_TYPE_OF_KIND.values())
            errors.add(f"{path}.type", f"must be one of {expected}")
            continue
        if loc and loc[0] == tag:
            loc = loc[1:]
        # `counts` is a str | list[int] union; pydantic reports one error per member.
        if loc[:2] == ["rle", "counts"] and len(loc) > 2 and loc[2] in ("str", "list[int]"):
            counts = raw.get("rle", {}).get("counts") if isinstance(raw.get("rle"), dict) else None
            if isinstance(counts, list) and loc[2] == "list[int]":
                errors.add(_join(path, ["rle", "counts", *loc[3:]]), error["msg"])
            elif not isinstance(counts, list) and not counts_union_reported:
                counts_union_reported = True
                errors.add(
                    f"{path}.rle.counts", "must be a compressed RLE string or a list of integers"
                )
            continue
        if kind == "value_error" and loc in (["bbox"], ["polygons"]):
            # The manifest's own validators name only the field; point at the element instead.
            if _refine_value_error(raw, str(loc[0]), path, errors):
                continue
        errors.add(_join(path, loc), error["msg"])


def _refine_value_error(raw: dict[str, Any], field: str, path: str, errors: _Errors) -> bool:
    before = len(errors.items)
    value = raw.get(field)
    if field == "bbox" and isinstance(value, list) and len(value) == 4:
        for k in (2, 3):
            number = _number(value[k])
            if number is not None and number < 0:
                side = "width" if k == 2 else "height"
                errors.add(f"{path}.bbox[{k}]", f"box {side} must not be negative, got {number}")
    if field == "polygons" and isinstance(value, list):
        for r, ring in enumerate(value):
            if isinstance(ring, list):
                _check_ring_shape(ring, f"{path}.polygons[{r}]", errors)
    return len(errors.items) > before


def _join(path: str, loc: Sequence[Any]) -> str:
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


# --- checks of one label -------------------------------------------------------------------------


def _check_label(
    schema: LabelSchema,
    names: set[str],
    label: Label,
    path: str,
    width: int,
    height: int,
    errors: _Errors,
) -> None:
    if label.type != schema.label_type:
        errors.add(
            f"{path}.type",
            f"a {schema.kind} schema takes {schema.label_type!r} labels, got {label.type!r}",
        )
        return
    if label.label not in names:
        errors.add(f"{path}.label", f"{label.label!r} is not a label of this schema")
    if label.score is not None and not (_number(label.score) is not None and 0 <= label.score <= 1):
        errors.add(f"{path}.score", f"score must be between 0 and 1, got {label.score}")
    _check_attributes(schema, label.attributes, path, errors)
    if isinstance(label, BoxLabel):
        _check_box(label.bbox, f"{path}.bbox", width, height, errors, schema.min_box_size)
    elif isinstance(label, PolygonLabel):
        _check_polygons(label.polygons, f"{path}.polygons", width, height, errors)
    elif isinstance(label, MaskLabel):
        _check_mask(label.rle, f"{path}.rle", width, height, errors)
    elif isinstance(label, KeypointsLabel):
        _check_keypoints(schema, label.keypoints, f"{path}.keypoints", width, height, errors)
    bbox = getattr(label, "bbox", None)
    if bbox is not None and not isinstance(label, BoxLabel):
        # A derived box on a shape: well-formed and inside, but may be degenerate (one keypoint).
        _check_box(bbox, f"{path}.bbox", width, height, errors, None, require_area=False)


def _check_attributes(
    schema: LabelSchema, attributes: dict[str, Any], path: str, errors: _Errors
) -> None:
    for key, value in attributes.items():
        field = f"{path}.attributes" + (f".{key}" if key.isidentifier() else f"[{json.dumps(key)}]")
        if key not in schema.attributes:
            errors.add(field, f"{key!r} is not an attribute of this schema")
        elif schema.attributes[key] and value not in schema.attributes[key]:
            errors.add(field, f"{value!r} is not one of {schema.attributes[key]!r}")


def _check_box(
    bbox: Sequence[Any],
    path: str,
    width: int,
    height: int,
    errors: _Errors,
    min_size: float | None,
    require_area: bool = True,
) -> None:
    if len(bbox) != 4:
        errors.add(path, f"a box is [x, y, width, height], got {len(bbox)} numbers")
        return
    numbers = [_number(v) for v in bbox]
    for k, number in enumerate(numbers):
        if number is None or not math.isfinite(number):
            errors.add(f"{path}[{k}]", f"must be a finite number, got {bbox[k]!r}")
    if any(number is None or not math.isfinite(number) for number in numbers):
        return
    x, y, w, h = (float(n) for n in numbers if n is not None)
    for k, size, side in ((2, w, "width"), (3, h, "height")):
        if size < 0:
            errors.add(f"{path}[{k}]", f"box {side} must not be negative, got {size}")
        elif size == 0 and require_area:
            errors.add(f"{path}[{k}]", f"box {side} is zero: the box has no area")
        elif min_size is not None and size < min_size:
            errors.add(f"{path}[{k}]", f"box {side} {size} is below the minimum {min_size}")
    for k, start, size, extent, axis in ((0, x, w, width, "x"), (1, y, h, height, "y")):
        if start < -EDGE_TOLERANCE:
            errors.add(f"{path}[{k}]", f"{axis} = {start} is outside the image")
        elif start > extent + EDGE_TOLERANCE:
            errors.add(f"{path}[{k}]", f"{axis} = {start} is beyond the image edge {extent}")
        elif size > 0 and start + size > extent + EDGE_TOLERANCE:
            errors.add(
                f"{path}[{k + 2}]",
                f"box ends at {axis} = {start + size}, beyond the image edge {extent}",
            )


def _check_ring_shape(ring: Sequence[Any], path: str, errors: _Errors) -> bool:
    ok = True
    if len(ring) % 2:
        errors.add(path, f"a ring is flat x, y pairs: {len(ring)} coordinates is an odd number")
        ok = False
    if len(ring) < 6:
        errors.add(path, f"a ring needs at least 3 points, got {len(ring) // 2}")
        ok = False
    if len(ring) > 2 * MAX_RING_POINTS:
        errors.add(path, f"a ring may have at most {MAX_RING_POINTS} points")
        ok = False
    return ok


def _check_polygons(
    rings: Sequence[Sequence[Any]], path: str, width: int, height: int, errors: _Errors
) -> None:
    if not rings:
        errors.add(path, "a polygon needs at least one ring")
    for r, ring in enumerate(rings):
        ring_path = f"{path}[{r}]"
        if not _check_ring_shape(ring, ring_path, errors):
            continue
        numbers = [_number(v) for v in ring]
        bad = [k for k, n in enumerate(numbers) if n is None or not math.isfinite(n)]
        for k in bad:
            errors.add(f"{ring_path}[{k}]", f"must be a finite number, got {ring[k]!r}")
        if bad:
            continue
        coords = [float(n) for n in numbers if n is not None]
        outside = [
            k
            for k, v in enumerate(coords)
            if not -EDGE_TOLERANCE <= v <= (width if k % 2 == 0 else height) + EDGE_TOLERANCE
        ]
        if outside:
            k = outside[0]
            others = f" ({len(outside) - 1} more coordinates too)" if len(outside) > 1 else ""
            axis, extent = ("x", width) if k % 2 == 0 else ("y", height)
            errors.add(
                f"{ring_path}[{k}]",
                f"{axis} = {coords[k]} is outside the image [0, {extent}]" + others,
            )
            continue
        points = _distinct_points(coords)
        if len(points) < 3 or _collinear(points):
            errors.add(ring_path, "the ring has no area: its points lie on one line")
            continue
        crossing = first_self_intersection(points)
        if crossing is not None:
            i, j = crossing
            errors.add(ring_path, f"the ring intersects itself: edges {i} and {j} cross")


def _check_mask(rle: Rle, path: str, width: int, height: int, errors: _Errors) -> None:
    if list(rle.size) != [height, width]:
        errors.add(
            f"{path}.size",
            f"mask size {list(rle.size)} must equal the image's [height, width] = "
            f"[{height}, {width}]",
        )
    mask_h, mask_w = rle.size
    if mask_h <= 0 or mask_w <= 0:
        errors.add(f"{path}.size", "mask height and width must be positive")
        return
    if isinstance(rle.counts, str):
        try:
            counts = parse_rle_string(rle.counts)
        except ValueError as exc:
            errors.add(f"{path}.counts", str(exc))
            return
    else:
        counts = list(rle.counts)
        negative = [k for k, run in enumerate(counts) if run < 0]
        for k in negative:
            errors.add(f"{path}.counts[{k}]", f"a run length must not be negative, got {counts[k]}")
        if negative:
            return
    if sum(counts) != mask_h * mask_w:
        errors.add(
            f"{path}.counts",
            f"runs cover {sum(counts)} pixels, the mask has {mask_h}×{mask_w} = {mask_h * mask_w}",
        )
        return
    if mask_area(rle) == 0:
        errors.add(f"{path}.counts", "the mask is empty")


def _check_keypoints(
    schema: LabelSchema,
    keypoints: Sequence[Any],
    path: str,
    width: int,
    height: int,
    errors: _Errors,
) -> None:
    expected = 3 * len(schema.keypoint_names)
    if len(keypoints) != expected:
        errors.add(
            path,
            f"expected {expected} numbers (x, y, visibility for each of "
            f"{len(schema.keypoint_names)} keypoints), got {len(keypoints)}",
        )
        return
    for n, name in enumerate(schema.keypoint_names):
        x, y, v = (_number(value) for value in keypoints[3 * n : 3 * n + 3])
        if v not in (0, 1, 2):
            errors.add(
                f"{path}[{3 * n + 2}]",
                f"visibility of {name!r} must be 0, 1 or 2, got {keypoints[3 * n + 2]!r}",
            )
        for k, value, extent, axis in ((3 * n, x, width, "x"), (3 * n + 1, y, height, "y")):
            if value is None or not math.isfinite(value):
                errors.add(f"{path}[{k}]", f"must be a finite number, got {keypoints[k]!r}")
            elif v in (1, 2) and not -EDGE_TOLERANCE <= value <= extent + EDGE_TOLERANCE:
                errors.add(
                    f"{path}[{k}]",
                    f"{axis} of {name!r} = {value} is outside the image [0, {extent}]",
                )


def _check_label_set(schema: LabelSchema, labels: list[Label | None], errors: _Errors) -> None:
    if schema.kind != "classification":
        return
    classes = [
        (index, label.label) for index, label in enumerate(labels) if isinstance(label, ClassLabel)
    ]
    if not schema.multi_label:
        if not labels:
            errors.add("labels", "single-label classification needs exactly one class label")
        for index, _ in classes[1:]:
            errors.add(
                f"labels[{index}]",
                f"single-label classification allows one class label; labels[{classes[0][0]}] "
                "is already one",
            )
        return
    first_seen: dict[str, int] = {}
    for index, name in classes:
        if name in first_seen:
            errors.add(f"labels[{index}].label", f"{name!r} repeats labels[{first_seen[name]}]")
        else:
            first_seen[name] = index


# --- geometry and RLE ----------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _distinct_points(coords: Sequence[float]) -> list[tuple[float, float]]:
    """The ring's points without consecutive repeats (tools often repeat the closing point)."""
    points: list[tuple[float, float]] = []
    for x, y in zip(coords[0::2], coords[1::2], strict=True):
        if not points or points[-1] != (x, y):
            points.append((x, y))
    while len(points) > 1 and points[-1] == points[0]:
        points.pop()
    return points


def _collinear(points: Sequence[tuple[float, float]]) -> bool:
    (x0, y0), (x1, y1) = points[0], points[1]
    return all((x1 - x0) * (y - y0) == (y1 - y0) * (x - x0) for x, y in points[2:])


def first_self_intersection(points: Sequence[tuple[float, float]]) -> tuple[int, int] | None:
    """The first pair of edges ``(i, j)`` of a closed ring that touch or cross, or None.

    Edge ``i`` runs from point ``i`` to point ``i + 1`` (wrapping). Edges next to each other share
    a point by construction, so they count only when they fold back over each other.
    """
    p = np.asarray(points, dtype=float)
    n = len(p)
    if n < 3:
        return None
    a, b = p, np.roll(p, -1, axis=0)
    d = b - a
    for i in range(n):
        # Adjacent edges i and i+1 overlap only if collinear and pointing back.
        j = (i + 1) % n
        if _cross(d[i], d[j]) == 0 and float(np.dot(d[i], d[j])) < 0:
            return (i, j) if i < j else (j, i)
    for i in range(n - 2):
        # Every later edge except i's neighbours (i+1, and n-1 when i is 0).
        stop = n - 1 if i == 0 else n
        if stop <= i + 2:
            continue
        others = np.arange(i + 2, stop)
        hits = _segments_intersect(a[i], b[i], a[others], b[others])
        if hits.any():
            return i, int(others[int(np.argmax(hits))])
    return None


def _cross(u: np.ndarray, v: np.ndarray) -> float:
    return float(u[0] * v[1] - u[1] * v[0])


def _orientation(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Sign of the turn p → q → r for each row (1 left, -1 right, 0 collinear)."""
    value = (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (
        r[..., 0] - p[..., 0]
    )
    return np.sign(value)


def _on_segment(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Whether r, known collinear with p–q, lies within the segment's bounding box."""
    return (
        (np.minimum(p[..., 0], q[..., 0]) <= r[..., 0])
        & (r[..., 0] <= np.maximum(p[..., 0], q[..., 0]))
        & (np.minimum(p[..., 1], q[..., 1]) <= r[..., 1])
        & (r[..., 1] <= np.maximum(p[..., 1], q[..., 1]))
    )


def _segments_intersect(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> Any:
    """Whether the segment p1–p2 touches or crosses each segment q1[k]–q2[k]."""
    p1 = np.broadcast_to(p1, q1.shape)
    p2 = np.broadcast_to(p2, q1.shape)
    o1, o2 = _orientation(p1, p2, q1), _orientation(p1, p2, q2)
    o3, o4 = _orientation(q1, q2, p1), _orientation(q1, q2, p2)
    proper = (o1 * o2 < 0) & (o3 * o4 < 0)
    touching = (
        ((o1 == 0) & _on_segment(p1, p2, q1))
        | ((o2 == 0) & _on_segment(p1, p2, q2))
        | ((o3 == 0) & _on_segment(q1, q2, p1))
        | ((o4 == 0) & _on_segment(q1, q2, p2))
    )
    return proper | touching


def parse_rle_string(counts: str) -> list[int]:
    """Run lengths of a COCO compressed RLE string (the format of pycocotools' ``rleToString``).

    Parsed here rather than by pycocotools because its decoder trusts the runs and writes past
    the mask buffer when they add up to more than ``height × width``.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise ValueError("compressed RLE ends in the middle of a run")
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                raise ValueError(
                    f"compressed RLE has an invalid character {counts[position]!r} at {position}"
                )
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"compressed RLE run {len(runs)} is negative ({value})")
        runs.append(value)
    return runs


def coco_rle(rle: Rle) -> dict[str, Any]:
    """The pycocotools compressed form of an RLE whose runs have been checked."""
    height, width = rle.size
    if isinstance(rle.counts, list):
        return dict(mask_utils.frPyObjects({"size": rle.size, "counts": rle.counts}, height, width))
    return {"size": list(rle.size), "counts": rle.counts.encode()}


def mask_area(rle: Rle) -> int:
    """Foreground pixels of a checked RLE."""
    if isinstance(rle.counts, list):
        return sum(rle.counts[1::2])
    return int(mask_utils.area(coco_rle(rle)))
