"""Image augmentation that moves labels with the pixels, reproducible by seed.

A :class:`Recipe` is a list of steps, each a registered strategy (see :data:`STRATEGIES`) with a
probability and validated parameters. :func:`apply_recipe` runs a recipe on one image and its
manifest labels; :func:`item_seed` derives the seed of one copy of one item, so an augmentation
job gives the same bytes whatever the order or parallelism of its workers.

Geometric strategies (flips, rotate, random_crop, resize, scale) move boxes, polygons, masks and
keypoints with the image. A shape cut by the image border is clipped to it, and dropped when
less than ``min_visibility`` of its area stays visible. Photometric strategies leave labels alone
and class labels always pass through. Whatever the recipe, the output labels lie inside the output
image: labels that were partly outside the input are clipped at the end, masks whose ``size``
differs from the image are first resized to it. Keypoint names are not swapped on flips (the
manifest does not say which keypoint is the left one).

Images other than ``L`` or ``RGB`` are converted to ``RGB`` first (alpha is dropped).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, TypeVar, Union, cast

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from pycocotools import mask as mask_utils
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

from kiln_core.manifest import (
    BoxLabel,
    ClassLabel,
    KeypointsLabel,
    Label,
    MaskLabel,
    PolygonLabel,
    Rle,
)

AnyLabel: TypeAlias = ClassLabel | BoxLabel | PolygonLabel | MaskLabel | KeypointsLabel
Matrix = NDArray[np.float64]
Size = tuple[int, int]  # (width, height), PIL order

# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------

T = TypeVar("T", int, float)


def _ordered(value: tuple[T, T]) -> tuple[T, T]:
    if value[0] > value[1]:
        raise ValueError("range must be [low, high] with low <= high")
    return value


Degrees = Annotated[float, Field(ge=-360.0, le=360.0)]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Factor = Annotated[float, Field(gt=0.0, le=8.0)]
Sigma = Annotated[float, Field(ge=0.0, le=255.0)]
Radius = Annotated[float, Field(ge=0.0, le=50.0)]
Holes = Annotated[int, Field(ge=1, le=64)]
Quality = Annotated[int, Field(ge=1, le=100)]
Bits = Annotated[int, Field(ge=1, le=8)]
Visibility = Annotated[float, Field(ge=0.0, le=1.0)]
Grey = Annotated[int, Field(ge=0, le=255)]
Jitter = Annotated[float, Field(ge=0.0, le=1.0)]


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(StrategyParams):
    pass


class RotateParams(StrategyParams):
    degrees: Annotated[tuple[Degrees, Degrees], AfterValidator(_ordered)] = (-15.0, 15.0)
    expand: bool = Field(default=False, description="grow the canvas to hold the whole image")
    fill: Grey = 0
    min_visibility: Visibility = 0.25


class RandomCropParams(StrategyParams):
    fraction: Annotated[tuple[Fraction, Fraction], AfterValidator(_ordered)] = Field(
        default=(0.6, 1.0), description="side of the crop as a fraction of the image side"
    )
    keep_aspect: bool = False
    min_visibility: Visibility = 0.25


class ResizeParams(StrategyParams):
    width: int | None = Field(default=None, ge=1, le=16384)
    height: int | None = Field(default=None, ge=1, le=16384)

    @model_validator(mode="after")
    def _one_side(self) -> ResizeParams:
        if self.width is None and self.height is None:
            raise ValueError("give width, height or both (one keeps the aspect ratio)")
        return self


class ScaleParams(StrategyParams):
    factor: Annotated[tuple[Factor, Factor], AfterValidator(_ordered)] = (0.8, 1.2)


class ColourJitterParams(StrategyParams):
    brightness: Jitter = 0.2
    contrast: Jitter = 0.2
    saturation: Jitter = 0.2
    hue: float = Field(default=0.0, ge=0.0, le=0.5, description="fraction of the hue circle")


class GaussianNoiseParams(StrategyParams):
    sigma: Annotated[tuple[Sigma, Sigma], AfterValidator(_ordered)] = (0.0, 10.0)


class GaussianBlurParams(StrategyParams):
    radius: Annotated[tuple[Radius, Radius], AfterValidator(_ordered)] = (0.0, 2.0)


class CutoutParams(StrategyParams):
    holes: Annotated[tuple[Holes, Holes], AfterValidator(_ordered)] = (1, 1)
    size: Annotated[tuple[Fraction, Fraction], AfterValidator(_ordered)] = Field(
        default=(0.1, 0.3), description="side of a hole as a fraction of the image side"
    )
    fill: Grey = 0


class JpegQualityParams(StrategyParams):
    quality: Annotated[tuple[Quality, Quality], AfterValidator(_ordered)] = (30, 90)


class PosterizeParams(StrategyParams):
    bits: Annotated[tuple[Bits, Bits], AfterValidator(_ordered)] = (3, 6)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

Labels = list[AnyLabel]
StrategyFn = Callable[[Image.Image, Labels, Any, np.random.Generator], tuple[Image.Image, Labels]]
F = TypeVar("F", bound=StrategyFn)


@dataclass(frozen=True)
class Strategy:
    name: str
    params: type[StrategyParams]
    apply: StrategyFn
    geometric: bool


STRATEGIES: dict[str, Strategy] = {}


def _register(
    name: str, params: type[StrategyParams], *, geometric: bool = False
) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        STRATEGIES[name] = Strategy(name, params, fn, geometric)
        return fn

    return decorate


# ---------------------------------------------------------------------------------------------
# Geometry shared by every geometric strategy
# ---------------------------------------------------------------------------------------------

Resample = Image.Resampling


@dataclass(frozen=True)
class _Warp:
    # forward 3x3 affine in continuous pixel coordinates (pixel i spans [i, i + 1))
    matrix: Matrix
    size: Size
    # does the same thing to any image exactly (transpose / crop / resize where possible)
    pixels: Callable[[Image.Image, Resample, int], Image.Image]


def _affine(a: float, b: float, c: float, d: float, e: float, f: float) -> Matrix:
    return np.array([[a, b, c], [d, e, f], [0.0, 0.0, 1.0]], dtype=np.float64)


def _translate(x: float, y: float) -> Matrix:
    return _affine(1, 0, x, 0, 1, y)


def _fill_colour(image: Image.Image, grey: int) -> int | tuple[int, ...]:
    return grey if len(image.getbands()) == 1 else (grey,) * len(image.getbands())


def _points(matrix: Matrix, xs: NDArray[np.float64], ys: NDArray[np.float64]) -> Matrix:
    return (matrix @ np.stack([xs, ys, np.ones_like(xs)]))[:2]


def _clip_ring(
    ring: list[tuple[float, float]], width: int, height: int
) -> list[tuple[float, float]]:
    """Sutherland–Hodgman against the image rectangle."""

    def cut(
        pts: list[tuple[float, float]], axis: int, bound: float, keep_below: bool
    ) -> list[tuple[float, float]]:
        def inside(p: tuple[float, float]) -> bool:
            return p[axis] <= bound if keep_below else p[axis] >= bound

        def cross(p: tuple[float, float], q: tuple[float, float]) -> tuple[float, float]:
            t = (bound - p[axis]) / (q[axis] - p[axis])
            other = p[1 - axis] + t * (q[1 - axis] - p[1 - axis])
            return (bound, other) if axis == 0 else (other, bound)

        out: list[tuple[float, float]] = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
        return out

    for axis, bound, keep_below in (
        (0, 0.0, False),
        (0, width, True),
        (1, 0.0, False),
        (1, height, True),
    ):
        if not ring:
            break
        ring = cut(ring, axis, float(bound), keep_below)
    return ring


def _ring_area(ring: list[float]) -> float:
    xs, ys = np.asarray(ring[0::2]), np.asarray(ring[1::2])
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


def _clamp(value: float, high: float) -> float:
    # clipping is exact in theory; this absorbs float error of order 1e-13
    return min(max(value, 0.0), high)


def _decode(rle: Rle) -> NDArray[np.uint8]:
    height, width = rle.size
    if isinstance(rle.counts, list):
        coco = mask_utils.frPyObjects(
            {"size": [height, width], "counts": rle.counts}, height, width
        )
    else:
        coco = {"size": [height, width], "counts": rle.counts.encode()}
    return cast(NDArray[np.uint8], mask_utils.decode(coco))


def _encode(mask: NDArray[np.uint8]) -> dict[str, Any]:
    coco = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in coco["size"]], "counts": coco["counts"].decode()}


def _box_geometry(rle: dict[str, Any]) -> tuple[list[float], float]:
    coco = {"size": rle["size"], "counts": rle["counts"].encode()}
    return [float(v) for v in mask_utils.toBbox(coco)], float(mask_utils.area(coco))


def _warp_box(
    box: list[float], matrix: Matrix, size: Size, min_visibility: float
) -> list[float] | None:
    x, y, w, h = box
    xs = np.array([x, x + w, x + w, x], dtype=np.float64)
    ys = np.array([y, y, y + h, y + h], dtype=np.float64)
    px, py = _points(matrix, xs, ys)
    x0, x1, y0, y1 = float(px.min()), float(px.max()), float(py.min()), float(py.max())
    cx0, cx1 = max(x0, 0.0), min(x1, float(size[0]))
    cy0, cy1 = max(y0, 0.0), min(y1, float(size[1]))
    if cx1 < cx0 or cy1 < cy0:
        return None
    full, visible = (x1 - x0) * (y1 - y0), (cx1 - cx0) * (cy1 - cy0)
    # a degenerate box (a point or a line) is kept while it is inside
    if full > 0 and (visible <= 0 or visible < min_visibility * full):
        return None
    return [cx0, cy0, cx1 - cx0, cy1 - cy0]


def _warp_polygon(label: PolygonLabel, matrix: Matrix, size: Size, vis: float) -> AnyLabel | None:
    rings: list[list[float]] = []
    full = visible = 0.0
    for ring in label.polygons:
        px, py = _points(matrix, np.asarray(ring[0::2], float), np.asarray(ring[1::2], float))
        full += _ring_area([v for xy in zip(px, py, strict=True) for v in xy])
        clipped = _clip_ring(list(zip(px.tolist(), py.tolist(), strict=True)), *size)
        if len(clipped) < 3:
            continue
        flat: list[float] = []
        for cx, cy in clipped:
            flat.extend((_clamp(cx, size[0]), _clamp(cy, size[1])))
        area = _ring_area(flat)
        if area <= 0:
            continue
        rings.append(flat)
        visible += area
    if not rings or (full > 0 and visible < vis * full):
        return None
    update: dict[str, Any] = {"polygons": rings}
    if label.bbox is not None:
        xs = [v for r in rings for v in r[0::2]]
        ys = [v for r in rings for v in r[1::2]]
        update["bbox"] = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    if label.area is not None:
        update["area"] = visible
    return label.model_copy(update=update)


def _warp_mask(label: MaskLabel, warp: _Warp | None, size: Size, vis: float) -> AnyLabel | None:
    mask = _decode(label.rle)
    before = int(mask.sum())
    image = Image.fromarray(mask * 255)
    if image.size != size and warp is None:
        image = image.resize(size, Resample.NEAREST)
    if warp is not None:
        image = warp.pixels(image, Resample.NEAREST, 0)
    out = (np.asarray(image) > 127).astype(np.uint8)
    after = int(out.sum())
    # how much the warp stretches area, so a scaled mask is not mistaken for a cut one
    stretch = abs(float(np.linalg.det(warp.matrix[:2, :2]))) if warp is not None else 1.0
    if after == 0 or (before > 0 and after < vis * before * stretch):
        return None
    rle = _encode(out)
    update: dict[str, Any] = {"rle": Rle.model_validate(rle)}
    if label.bbox is not None or label.area is not None:
        bbox, area = _box_geometry(rle)
        if label.bbox is not None:
            update["bbox"] = bbox
        if label.area is not None:
            update["area"] = area
    return label.model_copy(update=update)


def _warp_keypoints(label: KeypointsLabel, matrix: Matrix, size: Size) -> AnyLabel | None:
    points = list(label.keypoints)
    labelled_before = labelled_after = 0
    for i in range(0, len(points) - 2, 3):
        if points[i + 2] <= 0:
            continue
        labelled_before += 1
        px, py = _points(matrix, np.array([points[i]]), np.array([points[i + 1]]))
        x, y = float(px[0]), float(py[0])
        if 0.0 <= x <= size[0] and 0.0 <= y <= size[1]:
            points[i : i + 2] = [x, y]
            labelled_after += 1
        else:
            points[i : i + 3] = [0.0, 0.0, 0.0]
    update: dict[str, Any] = {"keypoints": points}
    if label.bbox is not None:
        bbox = _warp_box(label.bbox, matrix, size, 0.0)
        if bbox is None:
            return None
        update["bbox"] = bbox
    if labelled_before and not labelled_after:
        return None
    return label.model_copy(update=update)


def _warp_labels(labels: Labels, warp: _Warp | None, size: Size, min_visibility: float) -> Labels:
    """Move labels with a warp (or, with ``warp=None``, clip them to ``size``)."""
    matrix = warp.matrix if warp is not None else np.eye(3)
    out: Labels = []
    for label in labels:
        moved: AnyLabel | None
        if isinstance(label, ClassLabel):
            moved = label
        elif isinstance(label, BoxLabel):
            box = _warp_box(label.bbox, matrix, size, min_visibility)
            update: dict[str, Any] = {"bbox": box}
            if box is not None and label.area is not None:
                update["area"] = box[2] * box[3]
            moved = None if box is None else label.model_copy(update=update)
        elif isinstance(label, PolygonLabel):
            moved = _warp_polygon(label, matrix, size, min_visibility)
        elif isinstance(label, MaskLabel):
            unchanged = warp is None and tuple(label.rle.size) == (size[1], size[0])
            moved = label if unchanged else _warp_mask(label, warp, size, min_visibility)
        else:
            moved = _warp_keypoints(label, matrix, size)
        if moved is not None:
            out.append(moved)
    return out


def _geometric(
    image: Image.Image, labels: Labels, warp: _Warp, min_visibility: float = 0.0, fill: int = 0
) -> tuple[Image.Image, Labels]:
    return (
        warp.pixels(image, Resample.BILINEAR, fill),
        _warp_labels(labels, warp, warp.size, min_visibility),
    )


# ---------------------------------------------------------------------------------------------
# Geometric strategies
# ---------------------------------------------------------------------------------------------


def _transposer(method: Image.Transpose) -> Callable[[Image.Image, Resample, int], Image.Image]:
    return lambda image, _resample, _fill: image.transpose(method)


@_register("horizontal_flip", NoParams, geometric=True)
def _horizontal_flip(
    image: Image.Image, labels: Labels, _p: NoParams, _rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    width, height = image.size
    warp = _Warp(
        _affine(-1, 0, width, 0, 1, 0),
        (width, height),
        _transposer(Image.Transpose.FLIP_LEFT_RIGHT),
    )
    return _geometric(image, labels, warp)


@_register("vertical_flip", NoParams, geometric=True)
def _vertical_flip(
    image: Image.Image, labels: Labels, _p: NoParams, _rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    width, height = image.size
    warp = _Warp(
        _affine(1, 0, 0, 0, -1, height),
        (width, height),
        _transposer(Image.Transpose.FLIP_TOP_BOTTOM),
    )
    return _geometric(image, labels, warp)


_QUARTER_TURNS = {
    90.0: Image.Transpose.ROTATE_90,
    180.0: Image.Transpose.ROTATE_180,
    270.0: Image.Transpose.ROTATE_270,
}


@_register("rotate", RotateParams, geometric=True)
def _rotate(
    image: Image.Image, labels: Labels, p: RotateParams, rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    """Counter-clockwise by an angle drawn from ``degrees``, about the image centre."""
    angle = float(rng.uniform(*p.degrees)) % 360.0
    if angle == 0.0:
        return image, labels
    width, height = image.size
    # rounding makes quarter turns exact (cos 90° is 6e-17 in floats), as PIL does
    cos = round(math.cos(math.radians(angle)), 15)
    sin = round(math.sin(math.radians(angle)), 15)
    out_w, out_h = width, height
    if p.expand:
        # 1e-6 keeps a quarter turn from gaining a pixel to float error
        out_w = math.ceil(abs(width * cos) + abs(height * sin) - 1e-6)
        out_h = math.ceil(abs(width * sin) + abs(height * cos) - 1e-6)
    matrix = _translate(out_w / 2, out_h / 2) @ _affine(cos, sin, 0, -sin, cos, 0)
    matrix = matrix @ _translate(-width / 2, -height / 2)
    inverse = tuple(np.linalg.inv(matrix)[:2].ravel().tolist())
    quarter = _QUARTER_TURNS.get(angle)
    exact = quarter is not None and (out_w, out_h) == (
        (width, height) if angle == 180.0 else (height, width)
    )

    def pixels(im: Image.Image, resample: Resample, fill: int) -> Image.Image:
        if exact and quarter is not None:
            return im.transpose(quarter)
        return im.transform(
            (out_w, out_h),
            Image.Transform.AFFINE,
            inverse,
            resample=resample,
            fillcolor=_fill_colour(im, fill),
        )

    return _geometric(
        image, labels, _Warp(matrix, (out_w, out_h), pixels), p.min_visibility, p.fill
    )


@_register("random_crop", RandomCropParams, geometric=True)
def _random_crop(
    image: Image.Image, labels: Labels, p: RandomCropParams, rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    width, height = image.size
    fx = float(rng.uniform(*p.fraction))
    fy = float(rng.uniform(*p.fraction))
    if p.keep_aspect:
        fy = fx
    crop_w, crop_h = max(1, round(width * fx)), max(1, round(height * fy))
    x0 = int(rng.integers(0, width - crop_w + 1))
    y0 = int(rng.integers(0, height - crop_h + 1))
    box = (x0, y0, x0 + crop_w, y0 + crop_h)
    warp = _Warp(_translate(-x0, -y0), (crop_w, crop_h), lambda im, _r, _f: im.crop(box))
    return _geometric(image, labels, warp, p.min_visibility)


def _resize_to(image: Image.Image, labels: Labels, size: Size) -> tuple[Image.Image, Labels]:
    width, height = image.size
    if size == (width, height):
        return image, labels
    matrix = _affine(size[0] / width, 0, 0, 0, size[1] / height, 0)
    warp = _Warp(matrix, size, lambda im, resample, _f: im.resize(size, resample))
    return _geometric(image, labels, warp)


@_register("resize", ResizeParams, geometric=True)
def _resize(
    image: Image.Image, labels: Labels, p: ResizeParams, _rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    width, height = image.size
    out_w = p.width if p.width is not None else max(1, round(width * cast(int, p.height) / height))
    out_h = p.height if p.height is not None else max(1, round(height * out_w / width))
    return _resize_to(image, labels, (out_w, out_h))


@_register("scale", ScaleParams, geometric=True)
def _scale(
    image: Image.Image, labels: Labels, p: ScaleParams, rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    factor = float(rng.uniform(*p.factor))
    width, height = image.size
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return _resize_to(image, labels, size)


# ---------------------------------------------------------------------------------------------
# Photometric strategies (labels unchanged)
# ---------------------------------------------------------------------------------------------


@_register("colour_jitter", ColourJitterParams)
def _colour_jitter(
    image: Image.Image, labels: Labels, p: ColourJitterParams, rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    # draw every factor even when unused so the stream does not depend on the image mode
    brightness = float(rng.uniform(1 - p.brightness, 1 + p.brightness))
    contrast = float(rng.uniform(1 - p.contrast, 1 + p.contrast))
    saturation = float(rng.uniform(1 - p.saturation, 1 + p.saturation))
    hue = float(rng.uniform(-p.hue, p.hue))
    image = ImageEnhance.Brightness(image).enhance(brightness)
    image = ImageEnhance.Contrast(image).enhance(contrast)
    if image.mode == "RGB":
        image = ImageEnhance.Color(image).enhance(saturation)
        shift = round(hue * 256)
        if shift:
            h, s, v = image.convert("HSV").split()
            h = h.point([(i + shift) % 256 for i in range(256)])
            image = Image.merge("HSV", (h, s, v)).convert("RGB")
    return image, labels


@_register("gaussian_noise", GaussianNoiseParams)
def _gaussian_noise(
    image: Image.Image, labels: Labels, p: GaussianNoiseParams, rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    sigma = float(rng.uniform(*p.sigma))
    pixels = np.asarray(image, dtype=np.float32)
    # in place: a 12-megapixel image makes several 144 MB temporaries otherwise
    noise = rng.standard_normal(pixels.shape, dtype=np.float32)
    noise *= np.float32(sigma)
    noise += pixels
    np.rint(noise, out=noise)
    np.clip(noise, 0, 255, out=noise)
    return Image.fromarray(noise.astype(np.uint8)), labels


@_register("gaussian_blur", GaussianBlurParams)
def _gaussian_blur(
    image: Image.Image, labels: Labels, p: GaussianBlurParams, rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    radius = float(rng.uniform(*p.radius))
    return image.filter(ImageFilter.GaussianBlur(radius)), labels


@_register("grayscale", NoParams)
def _grayscale(
    image: Image.Image, labels: Labels, _p: NoParams, _rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    # back to the input mode so later steps and encoders see the same number of bands
    return image.convert("L").convert(image.mode), labels


@_register("cutout", CutoutParams)
def _cutout(
    image: Image.Image, labels: Labels, p: CutoutParams, rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    """Random erasing: fill random rectangles; labels stay, as occlusion does not move objects."""
    out = image.copy()
    width, height = image.size
    for _ in range(int(rng.integers(p.holes[0], p.holes[1] + 1))):
        side = float(rng.uniform(*p.size))
        hole_w, hole_h = max(1, round(width * side)), max(1, round(height * side))
        x = int(rng.integers(0, width - hole_w + 1))
        y = int(rng.integers(0, height - hole_h + 1))
        out.paste(_fill_colour(out, p.fill), (x, y, x + hole_w, y + hole_h))
    return out, labels


@_register("jpeg_quality", JpegQualityParams)
def _jpeg_quality(
    image: Image.Image, labels: Labels, p: JpegQualityParams, rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    quality = int(rng.integers(p.quality[0], p.quality[1] + 1))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out, labels


@_register("posterize", PosterizeParams)
def _posterize(
    image: Image.Image, labels: Labels, p: PosterizeParams, rng: np.random.Generator
) -> tuple[Image.Image, Labels]:
    return ImageOps.posterize(image, int(rng.integers(p.bits[0], p.bits[1] + 1))), labels


# ---------------------------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------------------------


class RecipeStep(BaseModel):
    """One step; the concrete model per strategy is built from :data:`STRATEGIES` below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    params: StrategyParams


def _step_model(strategy: Strategy) -> type[RecipeStep]:
    name = "".join(part.title() for part in strategy.name.split("_")) + "Step"
    return create_model(
        name,
        __base__=RecipeStep,
        strategy=(cast(Any, Literal)[strategy.name], ...),
        params=(strategy.params, Field(default_factory=strategy.params)),
    )


if TYPE_CHECKING:
    Step = RecipeStep
else:
    # a discriminated union makes pydantic name the step index, strategy and field in errors
    Step = Annotated[
        Union[tuple(_step_model(s) for s in STRATEGIES.values())],  # noqa: UP007
        Field(discriminator="strategy"),
    ]


class Recipe(BaseModel):
    """An augmentation recipe: steps run in order, each with its own probability."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[Step] = Field(default_factory=list, max_length=64)
    copies_per_item: int = Field(default=1, ge=1, le=100)


def item_seed(base_seed: int, item_id: str, copy: int) -> int:
    """The seed of one augmented copy of one item, independent of job order and workers."""
    digest = hashlib.sha256(f"{base_seed}\x00{item_id}\x00{copy}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def apply_recipe(
    image: Image.Image, labels: list[Label], recipe: Recipe, seed: int
) -> tuple[Image.Image, list[AnyLabel]]:
    """Augment one image and its labels; the same inputs and seed give the same output.

    Each step draws from its own generator (seeded by ``seed`` and the step index), so the
    outcome of a step depends only on its inputs, not on how many numbers earlier steps drew.
    """
    if seed < 0:
        raise ValueError("seed must not be negative")
    out = image.copy() if image.mode in ("L", "RGB") else image.convert("RGB")
    current = _warp_labels(list(labels), None, out.size, 0.0)
    for index, step in enumerate(recipe.steps):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))
        if rng.random() >= step.probability:
            continue
        out, current = STRATEGIES[step.strategy].apply(out, current, step.params, rng)
    return out, current
