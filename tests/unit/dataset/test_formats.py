"""Importers and exporters: round trips through COCO, YOLO and VOC, and per-item problems."""

from __future__ import annotations

import hashlib
import io
import json
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from kiln_core.manifest import BoxLabel, Category, ClassLabel, ManifestItem, dump_jsonl
from kiln_dataset.archive import extract_archive
from kiln_dataset.formats import (
    ImportResult,
    UnknownFormat,
    detect_format,
    export_stream,
    import_dataset,
)
from kiln_dataset.formats.yolo import parse_data_yaml
from kiln_dataset.formats.zipout import OUT_CHUNK
from kiln_dataset.media import image_size, sniff


def png(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "PNG")
    return path


def jpeg(path: Path, size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path, "JPEG")
    return path


def to_items(result: ImportResult) -> tuple[list[ManifestItem], dict[str, bytes]]:
    """What the service does with an import: hash each file and build manifest items."""
    items, blobs = [], {}
    for n, entry in enumerate(result.entries):
        assert entry.path is not None, entry.problems
        data = entry.path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        blobs[sha] = data
        width, height = (entry.width, entry.height) if entry.width else image_size(data)
        items.append(
            ManifestItem(
                item_id=entry.item_id or f"item-{n}",
                blob=sha,
                media_type=sniff(data) or "",
                size_bytes=len(data),
                width=width,
                height=height,
                source_name=entry.source_name,
                split=entry.split,
                labels=entry.labels,
                metadata=entry.metadata,
            )
        )
    return items, blobs


async def export(
    fmt: str, items: list[ManifestItem], categories: list[Category], blobs: dict[str, bytes]
) -> list[bytes]:
    async def read_blob(sha: str) -> AsyncIterator[bytes]:
        data = blobs[sha]
        for i in range(0, len(data), 64 * 1024):
            yield data[i : i + 64 * 1024]

    return [chunk async for chunk in export_stream(fmt, items, categories, read_blob)]


async def export_zip(fmt: str, result: ImportResult, tmp_path: Path) -> Path:
    items, blobs = to_items(result)
    chunks = await export(fmt, items, result.categories, blobs)
    out = tmp_path / f"export-{fmt}"
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        assert zf.testzip() is None
        zf.extractall(out)
    return out


# --- COCO -----------------------------------------------------------------------------------


def rle_string(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def rle_list(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed RLE: counts of alternating 0s and 1s in column-major order, from 0s."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def ann(
    ann_id: int,
    image_id: int,
    category_id: int,
    bbox: list[float],
    segmentation: Any,
    area: float | None = None,
    iscrowd: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    record = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "segmentation": segmentation,
        "iscrowd": iscrowd,
        **extra,
    }
    if area is not None:
        record["area"] = area
    return record


def build_coco(root: Path) -> Path:
    """A COCO dataset nested one folder down, with boxes, polygons, both RLE forms, keypoints."""
    base = root / "my-coco-export"
    sizes = {"a.png": (64, 48), "b.png": (80, 60), "c.png": (50, 50), "empty.png": (30, 20)}
    for i, (name, size) in enumerate(sizes.items()):
        png(base / "images" / name, size, seed=i)
    blob = np.zeros((60, 80), dtype=bool)
    blob[10:30, 20:50] = True
    blob[40:55, 5:15] = True
    crowd = np.zeros((50, 50), dtype=bool)
    crowd[5:45, 30:48] = True
    images = [
        {"id": 10 + i, "file_name": name, "width": w, "height": h}
        for i, (name, (w, h)) in enumerate(sizes.items())
    ]
    blob_area = float(mask_utils.area(mask_utils.encode(np.asfortranarray(blob.astype(np.uint8)))))
    square = [[60, 2, 70, 2, 70, 14, 60, 14]]
    annotations = [
        ann(1, 10, 1, [4.5, 6.0, 20.0, 15.25], [], area=305.0),
        ann(2, 10, 5, [30, 10, 20, 30], [[30, 10, 50, 10, 50, 40], [31, 35, 35, 35, 33, 39]]),
        ann(3, 11, 2, [5, 10, 45, 45], rle_string(blob), area=blob_area),
        ann(7, 11, 1, [60, 2, 10, 12], square, keypoints=[62, 4, 2, 68, 4, 1, 65, 12, 0]),
        ann(4, 12, 2, [30, 5, 18, 40], rle_list(crowd), area=720.0, iscrowd=1),
        ann(5, 12, 5, [1, 1, 10, 10], []),  # no stored area: the export computes 100
    ]
    annotations[1]["area"] = 300.0
    annotations[3] |= {"area": 120.0, "num_keypoints": 2}
    categories = [
        {"id": 1, "name": "cat", "supercategory": "animal"},
        {"id": 2, "name": "dog", "supercategory": "animal"},
        {"id": 5, "name": "car", "supercategory": "vehicle"},
    ]
    ann_path = base / "annotations" / "instances_train.json"
    ann_path.parent.mkdir(parents=True)
    data = {"images": images, "annotations": annotations, "categories": categories}
    ann_path.write_text(json.dumps(data))
    return ann_path


def coco_by_file(coco: COCO) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    out = {}
    for image in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]], iscrowd=None))
        out[Path(image["file_name"]).name] = (image, sorted(anns, key=lambda a: a["id"]))
    return out


async def test_coco_round_trip_keeps_categories_boxes_areas_and_segmentations(
    tmp_path: Path,
) -> None:
    original_json = build_coco(tmp_path / "upload")
    assert detect_format(tmp_path / "upload") == "coco"
    result = import_dataset(tmp_path / "upload")
    assert result.format == "coco"
    assert [e.problems for e in result.entries] == [[]] * 4 and result.problems == []
    assert {e.split for e in result.entries} == {"train"}

    out = await export_zip("coco", result, tmp_path)
    exported_json = out / "annotations" / "instances_train.json"
    original, exported = COCO(str(original_json)), COCO(str(exported_json))

    def cats(coco: COCO) -> list[tuple[Any, ...]]:
        return sorted(
            (c["id"], c["name"], c["supercategory"]) for c in coco.loadCats(coco.getCatIds())
        )

    assert cats(exported) == cats(original)
    before, after = coco_by_file(original), coco_by_file(exported)
    assert before.keys() == after.keys()
    for name, (image, anns) in before.items():
        exported_image, exported_anns = after[name]
        assert (exported_image["id"], exported_image["width"], exported_image["height"]) == (
            image["id"],
            image["width"],
            image["height"],
        )
        assert (out / "images" / "train" / name).read_bytes() == (
            original_json.parent.parent / "images" / name
        ).read_bytes()
        assert len(exported_anns) == len(anns), name
        for a, b in zip(anns, exported_anns, strict=True):
            assert (b["id"], b["category_id"], b["iscrowd"]) == (
                a["id"],
                a["category_id"],
                a["iscrowd"],
            )
            assert b["bbox"] == pytest.approx(a["bbox"])
            expected_area = a.get("area", a["bbox"][2] * a["bbox"][3])
            assert b["area"] == pytest.approx(expected_area)
            if isinstance(a["segmentation"], dict):
                assert isinstance(b["segmentation"], dict)
                assert type(b["segmentation"]["counts"]) is type(a["segmentation"]["counts"])
                assert np.array_equal(original.annToMask(a), exported.annToMask(b))
            else:
                assert len(b["segmentation"]) == len(a["segmentation"])
                for ring_a, ring_b in zip(a["segmentation"], b["segmentation"], strict=True):
                    assert ring_b == pytest.approx(ring_a)
            assert b.get("keypoints") == a.get("keypoints")
            assert b.get("num_keypoints") == a.get("num_keypoints")


async def test_coco_import_maps_shapes_to_manifest_labels(tmp_path: Path) -> None:
    build_coco(tmp_path)
    result = import_dataset(tmp_path)
    assert [(c.id, c.name, c.supercategory) for c in result.categories] == [
        (1, "cat", "animal"),
        (2, "dog", "animal"),
        (5, "car", "vehicle"),
    ]
    by_name = {Path(e.source_name).name: e for e in result.entries}
    assert by_name["a.png"].metadata["coco_image_id"] == 10
    assert [lab.type for lab in by_name["a.png"].labels] == ["box", "polygon"]
    assert [lab.type for lab in by_name["b.png"].labels] == ["mask", "polygon", "keypoints"]
    crowd = by_name["c.png"].labels[0]
    assert crowd.type == "mask" and crowd.iscrowd and isinstance(crowd.rle.counts, list)
    assert by_name["empty.png"].labels == []
    assert (by_name["a.png"].width, by_name["a.png"].height) == (64, 48)


def test_coco_reports_problems_per_item_without_failing(tmp_path: Path) -> None:
    png(tmp_path / "images" / "ok.png", (20, 20))
    data = {
        "images": [
            {"id": 1, "file_name": "ok.png", "width": 20, "height": 20},
            {"id": 2, "file_name": "missing.png", "width": 20, "height": 20},
            {"id": 3, "file_name": "../../../../etc/passwd", "width": 1, "height": 1},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 99, "bbox": [0, 0, 1, 1]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, -5, 1]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 4, "image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1]},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(data))
    result = import_dataset(tmp_path, "coco")
    by_name = {e.source_name: e for e in result.entries}
    ok = by_name["images/ok.png"]
    assert [p.kind for p in ok.problems] == ["unknown-category", "bad-annotation"]
    assert len(ok.labels) == 1
    assert by_name["missing.png"].path is None
    assert [p.kind for p in by_name["missing.png"].problems] == ["missing-file"]
    escaped = by_name["../../../../etc/passwd"]
    assert escaped.path is None and escaped.problems[0].kind == "missing-file"
    assert [p.kind for p in result.problems] == ["unknown-image"]


async def test_coco_export_measures_images_without_stored_size(tmp_path: Path) -> None:
    data = png(tmp_path / "x.png", (33, 21)).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    item = ManifestItem(
        item_id="x",
        blob=sha,
        media_type="image/png",
        size_bytes=len(data),
        source_name="dir/x.png",
        labels=[BoxLabel(label="thing", bbox=[1, 2, 3, 4])],
    )
    chunks = await export("coco", [item], [], {sha: data})
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        coco = json.loads(zf.read("annotations/instances_default.json"))
        assert zf.read("images/x.png") == data
    assert coco["images"] == [{"id": 1, "file_name": "x.png", "width": 33, "height": 21}]
    assert coco["categories"] == [{"id": 1, "name": "thing", "supercategory": ""}]
    assert coco["annotations"][0]["area"] == 12


# --- YOLO -----------------------------------------------------------------------------------


def build_yolo(root: Path) -> dict[str, list[list[float]]]:
    rng = np.random.default_rng(7)
    (root / "data.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnc: 3\n"
        "names:\n  0: person\n  1: 'traffic light'\n  2: dog  # a comment\n"
    )
    expected: dict[str, list[list[float]]] = {}
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            name = f"{split}_{i}"
            png(
                root / "images" / split / f"{name}.png",
                (int(rng.integers(40, 120)), int(rng.integers(40, 120))),
                seed=i,
            )
            rows = []
            for _ in range(int(rng.integers(1, 4))):
                w, h = rng.uniform(0.05, 0.4, 2)
                cx, cy = rng.uniform(0.3, 0.7, 2)
                rows.append([float(rng.integers(0, 3)), cx, cy, w, h])
            expected[name] = rows
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            text = "".join(
                " ".join(repr(v) if j else str(int(v)) for j, v in enumerate(r)) + "\n"
                for r in rows
            )
            (root / "labels" / split / f"{name}.txt").write_text(text)
    # A segmentation line and an unlabelled image (empty label file).
    (root / "labels" / "train" / "train_0.txt").open("a").write("2 0.1 0.1 0.5 0.1 0.3 0.6\n")
    expected["train_0"].append([2, 0.1, 0.1, 0.5, 0.1, 0.3, 0.6])
    png(root / "images" / "val" / "background.png", (32, 32))
    (root / "labels" / "val" / "background.txt").write_text("")
    expected["background"] = []
    return expected


def read_yolo_labels(root: Path) -> dict[str, list[list[float]]]:
    out = {}
    for path in root.glob("labels/*/*.txt"):
        out[path.stem] = [
            [float(v) for v in line.split()] for line in path.read_text().splitlines()
        ]
    return out


async def test_yolo_round_trip_keeps_normalised_boxes(tmp_path: Path) -> None:
    root = tmp_path / "upload" / "wrapper"
    expected = build_yolo(root)
    assert detect_format(tmp_path / "upload") == "yolo"
    result = import_dataset(tmp_path / "upload")
    assert [c.name for c in result.categories] == ["person", "traffic light", "dog"]
    assert [c.id for c in result.categories] == [0, 1, 2]
    assert all(not e.problems for e in result.entries)
    assert {e.split for e in result.entries} == {"train", "val"}
    first = next(e for e in result.entries if e.source_name.endswith("train_0.png"))
    assert first.labels[-1].type == "polygon"

    out = await export_zip("yolo", result, tmp_path)
    exported = read_yolo_labels(out)
    assert exported.keys() == expected.keys()
    for name, rows in expected.items():
        assert len(exported[name]) == len(rows), name
        for want, got in zip(rows, exported[name], strict=True):
            assert got == pytest.approx(want, abs=1e-6), name
    assert (out / "images" / "val" / "background.png").exists()
    names, _ = parse_data_yaml((out / "data.yaml").read_text())
    assert names == ["person", "traffic light", "dog"]
    data_yaml = (out / "data.yaml").read_text()
    assert "train: images/train" in data_yaml and "val: images/val" in data_yaml


def test_yolo_box_becomes_absolute_pixels(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png", (200, 100))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (tmp_path / "classes.txt").write_text("thing\n")
    result = import_dataset(tmp_path)
    assert result.format == "yolo"
    (label,) = result.entries[0].labels
    assert isinstance(label, BoxLabel)
    assert label.bbox == pytest.approx([80, 30, 40, 40])
    assert (result.entries[0].width, result.entries[0].height) == (200, 100)


def test_yolo_reports_bad_lines_per_item(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png", (50, 50))
    png(tmp_path / "images" / "b.png", (50, 50))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"
        "7 0.5 0.5 0.2 0.2\n"  # class index beyond the names
        "0 25 25 10 10\n"  # pixels, not normalised
        "x 0.1 0.1 0.1 0.1\n"  # not a class index
        "0 0.1 0.2\n"  # too few numbers
    )
    (tmp_path / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (tmp_path / "obj.names").write_text("thing\n")
    result = import_dataset(tmp_path, "yolo")
    a = next(e for e in result.entries if e.source_name == "images/a.png")
    assert len(a.labels) == 1
    assert sorted(p.kind for p in a.problems) == [
        "bad-annotation",
        "bad-annotation",
        "bad-annotation",
        "unknown-category",
    ]
    b = next(e for e in result.entries if e.source_name == "images/b.png")
    assert b.labels == [] and b.problems == []
    assert [p.kind for p in result.problems] == ["orphan-label"]


@pytest.mark.parametrize(
    "text",
    [
        "names: ['a', 'b c']\n",
        "names: [a, b c]\n",
        "nc: 2\nnames:\n  - a\n  - 'b c'\n",
        'names:\n  0: a\n  1: "b c"\ntrain: x\n',
        "names: {0: a, 1: b c}\n",
    ],
)
def test_data_yaml_names_in_every_common_shape(text: str) -> None:
    names, kpt = parse_data_yaml(text)
    assert names == ["a", "b c"] and kpt is None


# --- VOC ------------------------------------------------------------------------------------


VOC_OBJECT = """<object><name>{name}</name><pose>{pose}</pose><truncated>{trunc}</truncated>
<difficult>{diff}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>
<ymax>{y1}</ymax></bndbox></object>"""


def build_voc(root: Path) -> dict[str, list[tuple[Any, ...]]]:
    boxes = {
        "2008_000001": [
            ("dog", 10, 20, 60, 70, 0, 1, "Left"),
            ("person", 1, 2, 30, 40, 1, 0, "Unspecified"),
        ],
        "2008_000002": [("car", 5, 5, 50, 45, 0, 0, "Frontal")],
        "2008_000003": [],
    }
    for stem, objects in boxes.items():
        jpeg(root / "JPEGImages" / f"{stem}.jpg", (100, 80))
        body = "".join(
            VOC_OBJECT.format(name=n, x0=x0, y0=y0, x1=x1, y1=y1, diff=d, trunc=t, pose=p)
            for n, x0, y0, x1, y1, d, t, p in objects
        )
        xml = (
            f"<annotation><folder>VOC2008</folder><filename>{stem}.jpg</filename><size>"
            f"<width>100</width><height>80</height><depth>3</depth></size>{body}</annotation>"
        )
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("2008_000001\n2008_000003\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("2008_000002\n")
    (root / "ImageSets" / "Main" / "dog_train.txt").write_text("2008_000001  1\n")
    return boxes


def read_voc(root: Path) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for path in (root / "Annotations").glob("*.xml"):
        xml = ET.parse(path).getroot()
        out[path.stem] = sorted(
            (
                obj.findtext("name"),
                *(
                    float(obj.findtext(f"bndbox/{k}") or "nan")
                    for k in ("xmin", "ymin", "xmax", "ymax")
                ),
                int(obj.findtext("difficult") or 0),
                int(obj.findtext("truncated") or 0),
                obj.findtext("pose"),
            )
            for obj in xml.iter("object")
        )
        assert xml.findtext("size/width") == "100" and xml.findtext("size/height") == "80"
    return out


async def test_voc_round_trip_keeps_boxes_names_and_flags(tmp_path: Path) -> None:
    root = tmp_path / "upload" / "VOCdevkit"
    boxes = build_voc(root / "VOC2008")
    assert detect_format(tmp_path / "upload") == "voc"
    result = import_dataset(tmp_path / "upload")
    assert [c.name for c in result.categories] == ["car", "dog", "person"]
    splits = {Path(e.source_name).stem: e.split for e in result.entries}
    assert splits == {"2008_000001": "train", "2008_000002": "val", "2008_000003": "train"}
    dog = next(e for e in result.entries if e.source_name.endswith("2008_000001.jpg")).labels[0]
    assert dog.attributes == {"difficult": False, "truncated": True, "pose": "Left"}
    # VOC pixels 10..60 (1-based, inclusive) are x 9 to 60 in continuous 0-based coordinates.
    assert dog.bbox == [9, 19, 51, 51]  # type: ignore[union-attr]

    out = await export_zip("voc", result, tmp_path)
    expected = {
        stem: sorted(
            (n, float(x0), float(y0), float(x1), float(y1), d, t, p)
            for n, x0, y0, x1, y1, d, t, p in objects
        )
        for stem, objects in boxes.items()
    }
    assert read_voc(out) == expected
    assert (out / "ImageSets/Main/train.txt").read_text().split() == ["2008_000001", "2008_000003"]
    assert (out / "ImageSets/Main/val.txt").read_text().split() == ["2008_000002"]
    assert (out / "JPEGImages/2008_000002.jpg").exists()


def test_voc_refuses_entity_declarations(tmp_path: Path) -> None:
    jpeg(tmp_path / "JPEGImages" / "a.jpg", (10, 10))
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(
        '<!DOCTYPE x [<!ENTITY a "aaaa">]><annotation><filename>&a;</filename></annotation>'
    )
    result = import_dataset(tmp_path)
    assert result.format == "voc"
    assert [p.kind for p in result.problems] == ["bad-annotation"]
    assert [e.source_name for e in result.entries] == ["JPEGImages/a.jpg"]  # kept, unlabelled


# --- ImageFolder, CSV, JSON Lines -----------------------------------------------------------


def test_imagefolder_with_split_folders(tmp_path: Path) -> None:
    png(tmp_path / "train" / "cat" / "1.png", (8, 8))
    png(tmp_path / "train" / "dog" / "2.png", (8, 8))
    png(tmp_path / "val" / "cat" / "nested" / "3.png", (8, 8))
    (tmp_path / "train" / ".DS_Store").write_bytes(b"junk")
    assert detect_format(tmp_path) == "imagefolder"
    result = import_dataset(tmp_path)
    got = sorted((e.source_name, e.split, [lab.label for lab in e.labels]) for e in result.entries)
    assert got == [
        ("train/cat/1.png", "train", ["cat"]),
        ("train/dog/2.png", "train", ["dog"]),
        ("val/cat/nested/3.png", "val", ["cat"]),
    ]
    assert [(c.id, c.name) for c in result.categories] == [(1, "cat"), (2, "dog")]


def test_imagefolder_without_splits_inside_a_wrapper(tmp_path: Path) -> None:
    png(tmp_path / "pets" / "cat" / "1.png", (8, 8))
    png(tmp_path / "pets" / "dog" / "2.png", (8, 8))
    result = import_dataset(tmp_path)
    assert sorted((e.source_name, e.split, e.labels[0].label) for e in result.entries) == [
        ("cat/1.png", None, "cat"),
        ("dog/2.png", None, "dog"),
    ]


async def test_imagefolder_export_places_images_by_split_and_class(tmp_path: Path) -> None:
    png(tmp_path / "in" / "train" / "cat" / "1.png", (8, 8))
    png(tmp_path / "in" / "test" / "dog" / "1.png", (8, 8), seed=1)
    out = await export_zip("imagefolder", import_dataset(tmp_path / "in"), tmp_path)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["test/dog/1.png", "train/cat/1_1.png"]  # same stem twice: renamed


def test_csv_manifest_with_labels_splits_and_a_missing_file(tmp_path: Path) -> None:
    png(tmp_path / "imgs" / "a.png", (8, 8))
    png(tmp_path / "imgs" / "b.png", (8, 8))
    (tmp_path / "labels.csv").write_text(
        "file,label,split\nimgs/a.png,cat,train\nimgs/a.png,fluffy,train\n"
        "imgs/b.png,dog,valid\nimgs/gone.png,cat,train\nimgs/b.png,dog,bogus\n"
    )
    assert detect_format(tmp_path) == "csv"
    result = import_dataset(tmp_path)
    by_name = {e.source_name: e for e in result.entries}
    assert [lab.label for lab in by_name["imgs/a.png"].labels] == ["cat", "fluffy"]
    assert by_name["imgs/b.png"].split == "val"
    assert [p.kind for p in by_name["imgs/b.png"].problems] == ["bad-split"]
    assert by_name["imgs/gone.png"].path is None
    assert [c.name for c in result.categories] == ["cat", "dog", "fluffy"]


def test_jsonl_manifest_import_reports_bad_lines_and_labels(tmp_path: Path) -> None:
    png(tmp_path / "a.png", (8, 8))
    png(tmp_path / "b.png", (8, 8))
    lines = [
        {
            "file": "a.png",
            "item_id": "A",
            "split": "train",
            "labels": [
                {"type": "box", "label": "car", "bbox": [1, 1, 2, 2]},
                {"type": "box", "label": "car", "bbox": [1, 1, -2, 2]},
            ],
            "metadata": {"source": "cam1"},
        },
        {"file": "b.png", "labels": [{"type": "class", "label": "night"}], "blob": "ignored"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n\n"
    (tmp_path / "manifest.jsonl").write_text(text)
    assert detect_format(tmp_path) == "jsonl"
    result = import_dataset(tmp_path)
    a, b = result.entries
    assert (a.item_id, a.split, a.metadata, len(a.labels)) == ("A", "train", {"source": "cam1"}, 1)
    assert [p.kind for p in a.problems] == ["bad-annotation"]
    assert isinstance(b.labels[0], ClassLabel) and b.problems == []
    assert [(p.kind, p.source_name) for p in result.problems] == [("bad-line", "manifest.jsonl:3")]


async def test_jsonl_export_is_the_manifest(tmp_path: Path) -> None:
    png(tmp_path / "x" / "cat" / "a.png", (8, 8))
    items, blobs = to_items(import_dataset(tmp_path / "x"))
    chunks = await export("jsonl", items, [], blobs)
    assert b"".join(chunks) == b"".join(dump_jsonl(items))


async def test_export_streams_in_bounded_chunks(tmp_path: Path) -> None:
    data = png(tmp_path / "big.png", (1200, 900)).read_bytes()  # noise: ~3 MB, incompressible
    sha = hashlib.sha256(data).hexdigest()
    item = ManifestItem(
        item_id="big",
        blob=sha,
        media_type="image/png",
        size_bytes=len(data),
        width=1200,
        height=900,
        source_name="big.png",
    )
    chunks = await export("yolo", [item], [Category(id=0, name="a")], {sha: data})
    assert len(chunks) > 5
    assert max(len(c) for c in chunks) <= OUT_CHUNK + 64 * 1024 + 1024
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        assert zf.read("images/big.png") == data
        assert zf.read("labels/big.txt") == b""


async def test_export_deduplicates_and_sanitises_names(tmp_path: Path) -> None:
    data = png(tmp_path / "a.png", (4, 4)).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    items = [
        ManifestItem(
            item_id=str(i),
            blob=sha,
            media_type="image/png",
            size_bytes=len(data),
            width=4,
            height=4,
            source_name=name,
        )
        for i, name in enumerate(["a/img.png", "b/img.png", "IMG.jpg", "../../evil name.png", ""])
    ]
    chunks = await export("voc", items, [], {sha: data})
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("JPEGImages/"))
    # Unique by stem regardless of case; a nameless item is named after its id.
    assert names == [
        "JPEGImages/4.png",
        "JPEGImages/IMG_2.jpg",
        "JPEGImages/evil_name.png",
        "JPEGImages/img.png",
        "JPEGImages/img_1.png",
    ]


def test_uploaded_archive_extracts_then_imports(tmp_path: Path) -> None:
    expected = build_yolo(tmp_path / "src" / "my-yolo")
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((tmp_path / "src").rglob("*")):
            zf.write(path, path.relative_to(tmp_path / "src").as_posix())
        zf.writestr("__MACOSX/my-yolo/._data.yaml", b"junk")
    extract_archive(archive, tmp_path / "extracted")
    result = import_dataset(tmp_path / "extracted")
    assert result.format == "yolo"
    assert sorted(Path(e.source_name).stem for e in result.entries) == sorted(expected)


def test_unknown_layout_and_format(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert detect_format(tmp_path) is None
    with pytest.raises(UnknownFormat):
        import_dataset(tmp_path)
    with pytest.raises(UnknownFormat):
        import_dataset(tmp_path, "labelme")


def test_tar_member_whose_name_is_not_utf8_is_a_per_item_problem(tmp_path: Path) -> None:
    import tarfile

    archive = tmp_path / "upload.tar.gz"
    good, bad = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (8, 8)).save(good, "PNG")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(bad, "PNG")
    # Latin-1 bytes in a name, as an old archiver writes them: not UTF-8.
    latin1 = b"cat/caf\xe9.png".decode("utf-8", "surrogateescape")
    with tarfile.open(archive, "w:gz", encoding="utf-8", errors="surrogateescape") as tf:
        for name, data in (("cat/good.png", good.getvalue()), (latin1, bad.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    extract_archive(archive, tmp_path / "files")
    result = import_dataset(tmp_path / "files")
    assert [e.source_name for e in result.entries] == ["cat/good.png"]
    assert [(p.kind, p.source_name) for p in result.problems] == [("bad-name", "cat/caf\ufffd.png")]
    # Everything reported can be stored and sent as JSON.
    json.dumps([vars(p) for p in result.problems]).encode("utf-8")
