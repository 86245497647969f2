"""Inter-annotator agreement and consensus labels for items annotated by several people.

Classes are compared with Cohen's kappa (two raters) or Fleiss' kappa (any fixed number of raters);
shapes (boxes, polygons, masks) with intersection over union. Degenerate cases: when chance
agreement is certain (every rating falls in one category) the raters agree perfectly, and both
kappas return 1.0 instead of dividing zero by zero.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, NamedTuple, TypeAlias

import numpy as np
from pycocotools import mask as mask_utils

from kiln_annotation.label_schema import (
    LABEL_TYPE_OF_KIND,
    SchemaKind,
    coco_rle,
    parse_rle_string,
)
from kiln_core.manifest import BoxLabel, ClassLabel, Label, MaskLabel, PolygonLabel, Rle

Shape: TypeAlias = BoxLabel | PolygonLabel | MaskLabel
SHAPE_TYPES = (BoxLabel, PolygonLabel, MaskLabel)

# --- kappa ---------------------------------------------------------------------------------------


def cohens_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two raters who each gave one nominal category per item.

    ``a[i]`` and ``b[i]`` are the two ratings of item ``i``. Returns 1.0 when both raters used
    one and the same category for every item (chance agreement is then 1 and kappa undefined).
    """
    if len(a) != len(b):
        raise ValueError(f"both raters must rate the same items: {len(a)} ≠ {len(b)} ratings")
    if not a:
        raise ValueError("kappa needs at least one rated item")
    n = len(a)
    observed = Fraction(sum(x == y for x, y in zip(a, b, strict=True)), n)
    count_a, count_b = Counter(a), Counter(b)
    chance = Fraction(sum(count_a[c] * count_b[c] for c in count_a), n * n)
    if chance == 1:
        return 1.0
    return float((observed - chance) / (1 - chance))


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> float:
    """Fleiss' kappa of items × ratings: ``ratings[i]`` holds the categories item ``i`` received.

    Every item needs the same number (≥ 2) of ratings; the raters need not be the same people.
    Returns 1.0 when every rating of every item is the same category.
    """
    categories = sorted({category for item in ratings for category in item})
    column = {category: k for k, category in enumerate(categories)}
    counts = []
    for item in ratings:
        row = [0] * len(categories)
        for category in item:
            row[column[category]] += 1
        counts.append(row)
    return fleiss_kappa_from_counts(counts)


def fleiss_kappa_from_counts(counts: Sequence[Sequence[int]] | np.ndarray) -> float:
    """Fleiss' kappa from an items × categories matrix: ``counts[i][j]`` raters put item i in j.

    Each row must add up to the same number of raters (≥ 2).
    """
    matrix = np.asarray(counts, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError("counts must be a non-empty items × categories matrix")
    if (matrix < 0).any():
        raise ValueError("counts must not be negative")
    per_item = matrix.sum(axis=1)
    raters = int(per_item[0])
    if (per_item != raters).any():
        raise ValueError("every item needs the same number of ratings")
    if raters < 2:
        raise ValueError("Fleiss' kappa needs at least two ratings per item")
    items = matrix.shape[0]
    total = items * raters
    # Exact fractions: the published examples are checked to three decimals.
    observed = Fraction(int((matrix * matrix).sum()) - total, total * (raters - 1))
    chance = Fraction(sum(int(c) ** 2 for c in matrix.sum(axis=0)), total * total)
    if chance == 1:
        return 1.0
    return float((observed - chance) / (1 - chance))


# --- IoU -----------------------------------------------------------------------------------------


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``[x, y, width, height]`` boxes; 0.0 when both have no area."""
    ax0, ay0, ax1, ay1 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx0, by0, bx1, by1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    # Areas from the same corners as the intersection, so a box against itself gives exactly 1.
    area_a = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0)
    area_b = max(0.0, bx1 - bx0) * max(0.0, by1 - by0)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = area_a + area_b - inter
    if union <= 0:
        return 0.0
    return min(1.0, max(0.0, inter / union))


def mask_iou(a: Rle | Mapping[str, Any], b: Rle | Mapping[str, Any]) -> float:
    """IoU of two COCO RLE masks of the same size; 0.0 when both are empty."""
    rle_a, rle_b = _checked_rle(a), _checked_rle(b)
    if list(rle_a.size) != list(rle_b.size):
        raise ValueError(f"mask sizes differ: {rle_a.size} and {rle_b.size}")
    return _rle_iou(coco_rle(rle_a), coco_rle(rle_b))


def polygon_iou(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """IoU of two polygons (lists of flat ``x, y`` rings), rasterised at one-pixel resolution.

    The rings are drawn on a canvas just large enough for both, so no image size is needed.
    """
    offset, canvas = _joint_canvas([*a, *b])
    return _rle_iou(_polygon_rle(a, offset, canvas), _polygon_rle(b, offset, canvas))


def shape_iou(a: Label, b: Label) -> float:
    """IoU of two shape labels (box, polygon or mask; the two may be of different types)."""
    if not isinstance(a, SHAPE_TYPES) or not isinstance(b, SHAPE_TYPES):
        raise ValueError(f"IoU needs box, polygon or mask labels, got {a.type!r} and {b.type!r}")
    if isinstance(a, BoxLabel) and isinstance(b, BoxLabel):
        return box_iou(a.bbox, b.bbox)
    masks = [label for label in (a, b) if isinstance(label, MaskLabel)]
    if masks:
        height, width = masks[0].rle.size
        offset, canvas = (0, 0), (height, width)
    else:
        outlines = [ring for label in (a, b) for ring in _outline(label)]  # type: ignore[arg-type]
        offset, canvas = _joint_canvas(outlines)
    return _rle_iou(_shape_rle(a, offset, canvas), _shape_rle(b, offset, canvas))


def _rle_iou(a: dict[str, Any], b: dict[str, Any]) -> float:
    return float(mask_utils.iou([a], [b], [0])[0][0])


def _checked_rle(rle: Rle | Mapping[str, Any]) -> Rle:
    """The RLE as a model, refusing runs that do not cover the mask (pycocotools trusts them)."""
    model = rle if isinstance(rle, Rle) else Rle.model_validate(rle)
    height, width = model.size
    runs = parse_rle_string(model.counts) if isinstance(model.counts, str) else model.counts
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        raise ValueError(f"RLE runs do not cover a {height}×{width} mask")
    return model


def _outline(label: BoxLabel | PolygonLabel) -> list[list[float]]:
    if isinstance(label, BoxLabel):
        x, y, w, h = label.bbox
        return [[x, y, x + w, y + h]]
    return [list(ring) for ring in label.polygons]


def _joint_canvas(rings: Sequence[Sequence[float]]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Integer ``(x, y)`` offset and ``(height, width)`` of a canvas covering every ring."""
    xs = [x for ring in rings for x in ring[0::2]]
    ys = [y for ring in rings for y in ring[1::2]]
    # Whole-pixel offsets keep the rasterisation identical to drawing on the full image.
    x0, y0 = math.floor(min(xs)), math.floor(min(ys))
    width, height = math.ceil(max(xs)) - x0 + 1, math.ceil(max(ys)) - y0 + 1
    return (x0, y0), (height, width)


def _polygon_rle(
    rings: Sequence[Sequence[float]], offset: tuple[int, int], canvas: tuple[int, int]
) -> dict[str, Any]:
    ox, oy = offset
    shifted = [[v - (ox if k % 2 == 0 else oy) for k, v in enumerate(ring)] for ring in rings]
    height, width = canvas
    return dict(mask_utils.merge(mask_utils.frPyObjects(shifted, height, width)))


def _shape_rle(label: Shape, offset: tuple[int, int], canvas: tuple[int, int]) -> dict[str, Any]:
    height, width = canvas
    if isinstance(label, MaskLabel):
        if list(label.rle.size) != [height, width]:
            raise ValueError(f"mask sizes differ: {label.rle.size} and {[height, width]}")
        return coco_rle(_checked_rle(label.rle))
    if isinstance(label, BoxLabel):
        x, y, w, h = label.bbox
        box = np.array([[x - offset[0], y - offset[1], w, h]], dtype=np.float64)
        return dict(mask_utils.merge(mask_utils.frPyObjects(box, height, width)))
    return _polygon_rle(label.polygons, offset, canvas)


# --- matching ------------------------------------------------------------------------------------


class ShapeMatch(NamedTuple):
    a: int
    b: int
    iou: float


def match_shapes(
    a: Sequence[Label], b: Sequence[Label], iou_threshold: float = 0.5
) -> list[ShapeMatch]:
    """Pair shapes of ``a`` with shapes of ``b`` of the same label name, greedily by highest IoU.

    A pair needs IoU ≥ ``iou_threshold``; each shape is in at most one pair. Returned as index
    pairs into ``a`` and ``b``, highest IoU first.
    """
    candidates = []
    for i, shape_a in enumerate(a):
        for j, shape_b in enumerate(b):
            if shape_a.label != shape_b.label:
                continue
            iou = shape_iou(shape_a, shape_b)
            if iou >= iou_threshold:
                candidates.append(ShapeMatch(i, j, iou))
    candidates.sort(key=lambda m: (-m.iou, m.a, m.b))
    used_a: set[int] = set()
    used_b: set[int] = set()
    matches = []
    for match in candidates:
        if match.a not in used_a and match.b not in used_b:
            used_a.add(match.a)
            used_b.add(match.b)
            matches.append(match)
    return matches


def shape_agreement(a: Sequence[Label], b: Sequence[Label], iou_threshold: float = 0.5) -> float:
    """Agreement of two annotators' shapes on one item, in [0, 1].

    The mean IoU over every object either annotator drew: a matched pair counts once with its IoU,
    a shape left unmatched on either side counts as 0. Two empty annotations agree fully (1.0).
    """
    if not a and not b:
        return 1.0
    matches = match_shapes(a, b, iou_threshold)
    objects = len(a) + len(b) - len(matches)
    return sum(m.iou for m in matches) / objects


# --- consensus -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A label some annotators gave, with how many of them gave it."""

    label: Label
    votes: int
    reason: Literal["tie", "too few votes"] | None = None


@dataclass(frozen=True)
class Consensus:
    """The consensus of ``annotators`` annotations of one item.

    ``agreed`` are the consensus labels; ``disputed`` are labels some annotators gave that did not
    reach agreement, for a reviewer to settle.
    """

    annotators: int
    agreed: list[Candidate]
    disputed: list[Candidate]

    @property
    def labels(self) -> list[Label]:
        return [candidate.label for candidate in self.agreed]


def consensus(
    annotations: Sequence[Sequence[Label]],
    kind: SchemaKind,
    min_agreement: float = 0.5,
    *,
    multi_label: bool = False,
    iou_threshold: float = 0.5,
) -> Consensus:
    """Merge several annotators' labels of one item; ``annotations[k]`` is annotator k's labels.

    A label is agreed when more than ``min_agreement`` of the annotators gave it (at the default
    0.5, a strict majority).

    - Single-label classification: the class with the most votes; a tie for most votes is no
      consensus. An annotator who gave no class counts as a vote for none.
    - Multi-label classification: each class is voted on separately.
    - Boxes, polygons, masks: shapes of the same label name from different annotators are
      clustered by IoU (complete linkage: every pair in a cluster overlaps by ≥ ``iou_threshold``,
      at most one shape per annotator). An agreed box is the mean of the cluster's boxes, an agreed
      mask keeps the pixels most of the cluster's masks cover, and an agreed polygon is the
      cluster's medoid (the polygon with the highest total IoU with the others), since polygons
      with different vertices cannot be averaged. Attributes come from the medoid.
    """
    if not annotations:
        raise ValueError("consensus needs at least one annotation")
    if not 0 <= min_agreement < 1:
        raise ValueError(f"min_agreement must be in [0, 1), got {min_agreement}")
    expected = LABEL_TYPE_OF_KIND[kind]
    for k, labels in enumerate(annotations):
        for label in labels:
            if label.type != expected:
                raise ValueError(f"annotation {k} has a {label.type!r} label in a {kind} project")
    if kind == "classification":
        if multi_label:
            return _multi_label_consensus(annotations, Fraction(min_agreement))
        return _single_label_consensus(annotations, Fraction(min_agreement))
    if kind == "keypoints":
        raise ValueError("consensus of keypoints is not supported")
    return _shape_consensus(annotations, Fraction(min_agreement), iou_threshold)


def _single_label_consensus(
    annotations: Sequence[Sequence[Label]], min_agreement: Fraction
) -> Consensus:
    votes: Counter[str] = Counter()
    for k, labels in enumerate(annotations):
        if len(labels) > 1:
            raise ValueError(f"annotation {k} has {len(labels)} labels in a single-label project")
        votes.update(label.label for label in labels)
    n = len(annotations)
    if not votes:
        return Consensus(n, [], [])
    top = max(votes.values())
    leaders = [name for name, count in votes.items() if count == top]
    if len(leaders) > 1:
        return Consensus(n, [], [Candidate(ClassLabel(label=name), top, "tie") for name in leaders])
    winner = Candidate(ClassLabel(label=leaders[0]), top)
    if Fraction(top, n) > min_agreement:
        return Consensus(n, [winner], [])
    return Consensus(n, [], [Candidate(winner.label, top, "too few votes")])


def _multi_label_consensus(
    annotations: Sequence[Sequence[Label]], min_agreement: Fraction
) -> Consensus:
    votes: Counter[str] = Counter()
    for labels in annotations:
        # An annotator who repeats a class still votes for it once.
        votes.update(dict.fromkeys((label.label for label in labels), 1))
    n = len(annotations)
    agreed, disputed = [], []
    for name, count in votes.items():
        if Fraction(count, n) > min_agreement:
            agreed.append(Candidate(ClassLabel(label=name), count))
        else:
            disputed.append(Candidate(ClassLabel(label=name), count, _reason(count, n)))
    return Consensus(n, agreed, disputed)


def _reason(votes: int, annotators: int) -> Literal["tie", "too few votes"]:
    return "tie" if 2 * votes == annotators else "too few votes"


def _shape_consensus(
    annotations: Sequence[Sequence[Label]], min_agreement: Fraction, iou_threshold: float
) -> Consensus:
    shapes: list[tuple[int, Shape]] = [
        (k, label)
        for k, labels in enumerate(annotations)
        for label in labels
        if isinstance(label, SHAPE_TYPES)
    ]
    ious: dict[tuple[int, int], float] = {}
    for u, (annotator_u, shape_u) in enumerate(shapes):
        for v in range(u + 1, len(shapes)):
            annotator_v, shape_v = shapes[v]
            if annotator_u != annotator_v and shape_u.label == shape_v.label:
                iou = shape_iou(shape_u, shape_v)
                if iou >= iou_threshold:
                    ious[u, v] = iou

    cluster_of = list(range(len(shapes)))
    members: dict[int, list[int]] = {u: [u] for u in range(len(shapes))}
    for u, v in sorted(ious, key=lambda pair: (-ious[pair], pair)):
        cu, cv = cluster_of[u], cluster_of[v]
        if cu == cv:
            continue
        annotators_u = {shapes[x][0] for x in members[cu]}
        if any(shapes[y][0] in annotators_u for y in members[cv]):
            continue
        if not all((min(x, y), max(x, y)) in ious for x in members[cu] for y in members[cv]):
            continue
        for y in members[cv]:
            cluster_of[y] = cu
        members[cu].extend(members.pop(cv))

    n = len(annotations)
    agreed, disputed = [], []
    # Clusters in the order their first shape was drawn, so the result is deterministic.
    for cluster in sorted(members.values(), key=min):
        cluster_shapes = [shapes[x][1] for x in sorted(cluster)]
        pair_ious = [[ious.get((min(x, y), max(x, y)), 0.0) for y in cluster] for x in cluster]
        medoid = cluster_shapes[max(range(len(cluster)), key=lambda i: (sum(pair_ious[i]), -i))]
        merged = _merge_shapes(cluster_shapes, medoid)
        votes = len(cluster)
        if Fraction(votes, n) > min_agreement:
            agreed.append(Candidate(merged, votes))
        else:
            disputed.append(Candidate(merged, votes, _reason(votes, n)))
    return Consensus(n, agreed, disputed)


def _merge_shapes(shapes: Sequence[Shape], medoid: Shape) -> Label:
    common: dict[str, Any] = {"label": medoid.label, "attributes": dict(medoid.attributes)}
    if all(isinstance(shape, BoxLabel) for shape in shapes):
        boxes = np.array([shape.bbox for shape in shapes if isinstance(shape, BoxLabel)])
        iscrowd = medoid.iscrowd
        return BoxLabel(bbox=[float(v) for v in boxes.mean(axis=0)], iscrowd=iscrowd, **common)
    if all(isinstance(shape, MaskLabel) for shape in shapes):
        masks = [
            mask_utils.decode(coco_rle(_checked_rle(shape.rle)))
            for shape in shapes
            if isinstance(shape, MaskLabel)
        ]
        votes = np.sum(masks, axis=0, dtype=np.int32)
        majority = np.asfortranarray((2 * votes > len(masks)).astype(np.uint8))
        if majority.any():
            encoded = mask_utils.encode(majority)
            rle = Rle(size=[int(s) for s in encoded["size"]], counts=encoded["counts"].decode())
            return MaskLabel(rle=rle, iscrowd=medoid.iscrowd, **common)
    # Polygons, mixed shapes, or masks whose majority is empty: the medoid stands for the cluster.
    return medoid.model_copy(update={"score": None})
