"""The unified manifest of a dataset version: JSON Lines, one :class:`ManifestItem` per item.

Every importer writes it, every exporter reads it, annotation writes labels in it and training
reads it. Coordinates are absolute pixels with the origin at the top-left corner; boxes are
``[x, y, width, height]`` (COCO order); polygons are lists of flat ``[x1, y1, x2, y2, …]`` rings;
masks are COCO run-length encodings (``counts`` as a compressed string or a list of ints,
column-major, ``size`` = ``[height, width]``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from kiln_core.storage import ObjectStore

Split = Literal["train", "val", "test"]
TaskType = Literal["classification", "detection", "segmentation"]


class _Label(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=200)
    # Confidence of a machine label (pre-labels, predictions); None for human labels.
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    attributes: dict[str, Any] = Field(default_factory=dict)


class ClassLabel(_Label):
    type: Literal["class"] = "class"


class BoxLabel(_Label):
    type: Literal["box"] = "box"
    bbox: list[float] = Field(min_length=4, max_length=4, description="[x, y, width, height]")
    area: float | None = None
    iscrowd: bool = False

    @field_validator("bbox")
    @classmethod
    def _positive_size(cls, v: list[float]) -> list[float]:
        if v[2] < 0 or v[3] < 0:
            raise ValueError("box width and height must not be negative")
        return v


class PolygonLabel(_Label):
    type: Literal["polygon"] = "polygon"
    polygons: list[list[float]] = Field(min_length=1, description="rings of flat x, y pairs")
    bbox: list[float] | None = Field(default=None, min_length=4, max_length=4)
    area: float | None = None
    iscrowd: bool = False

    @field_validator("polygons")
    @classmethod
    def _well_formed(cls, v: list[list[float]]) -> list[list[float]]:
        for ring in v:
            if len(ring) < 6 or len(ring) % 2:
                raise ValueError("each polygon needs at least 3 points as flat x, y pairs")
        return v


class Rle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: list[int] = Field(min_length=2, max_length=2, description="[height, width]")
    counts: str | list[int]


class MaskLabel(_Label):
    type: Literal["mask"] = "mask"
    rle: Rle
    bbox: list[float] | None = Field(default=None, min_length=4, max_length=4)
    area: float | None = None
    iscrowd: bool = False


class KeypointsLabel(_Label):
    type: Literal["keypoints"] = "keypoints"
    # flat [x1, y1, v1, x2, y2, v2, …], v = 0 not labelled, 1 occluded, 2 visible (COCO)
    keypoints: list[float]
    bbox: list[float] | None = Field(default=None, min_length=4, max_length=4)


Label = Annotated[
    ClassLabel | BoxLabel | PolygonLabel | MaskLabel | KeypointsLabel, Field(discriminator="type")
]


class Category(BaseModel):
    """A label name with the id and supercategory formats such as COCO need to round-trip."""

    id: int
    name: str
    supercategory: str | None = None


class ManifestItem(BaseModel):
    """One item of a dataset version."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=500, description="stable within the dataset")
    blob: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the bytes")
    media_type: str
    size_bytes: int = Field(ge=0)
    width: int | None = None
    height: int | None = None
    source_name: str = Field(default="", description="file name or path it came from")
    split: Split | None = None
    labels: list[Label] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return bool(self.labels)


def dump_jsonl(items: Iterable[ManifestItem]) -> Iterator[bytes]:
    """Serialise items as JSON Lines, one ``bytes`` line per item (streamable)."""
    for item in items:
        yield item.model_dump_json(exclude_none=True).encode() + b"\n"


def parse_jsonl(lines: Iterable[bytes | str]) -> Iterator[ManifestItem]:
    """Parse manifest lines; blank lines are skipped."""
    for number, line in enumerate(lines, 1):
        text = line.decode() if isinstance(line, bytes) else line
        if not text.strip():
            continue
        try:
            yield ManifestItem.model_validate(json.loads(text))
        except ValueError as exc:
            raise ValueError(f"manifest line {number}: {exc}") from exc


async def read_manifest(store: ObjectStore, key: str) -> list[ManifestItem]:
    """A version's manifest from the object store, streamed line by line."""
    items: list[ManifestItem] = []
    pending = b""
    async for chunk in store.stream(key):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        items.extend(parse_jsonl(lines))
    items.extend(parse_jsonl([pending]))
    return items
