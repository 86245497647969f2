"""Datasets written by third-party tools (globox for COCO, YOLO and VOC; PyYAML for
``data.yaml``) are imported with every class name and box intact, exported in every format, and
read back by those tools (and pycocotools) unchanged — including names that need quoting or
escaping."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from globox import Annotation, AnnotationSet, BoundingBox, BoxFormat
from pycocotools.coco import COCO

from kiln_dataset.formats import ImportResult, import_dataset
from kiln_dataset.formats.yolo import parse_data_yaml
from tests.unit.dataset.test_formats import export_zip, jpeg, png

# Names a YAML, CSV or XML writer has to quote or escape, and non-ASCII ones.
NAMES = [
    "tabby, tabby cat",
    "c #1",
    "café",
    "猫",
    'say "hi"',
    "it's",
    "key: value",
    "- dash",
    "yes",
    "007",
    "[x]",
    "a & <b>",
    "🐱",
]
SIZE = (64, 48)


def truth() -> dict[str, list[tuple[str, list[float]]]]:
    """Per image, (class name, COCO [x, y, w, h] in pixels); every name is used."""
    boxes: dict[str, list[tuple[str, list[float]]]] = {}
    for i, name in enumerate(NAMES):
        image = f"img{i % 4}.jpg"
        boxes.setdefault(image, []).append((name, [float(2 + i), float(3 + i), 20.0, 10.0]))
    return boxes


def write_images(folder: Path) -> None:
    for image in truth():
        jpeg(folder / image, SIZE)


def globox_set(*, voc: bool = False) -> AnnotationSet:
    annotations = []
    for image, objects in truth().items():
        boxes = []
        for name, (x, y, w, h) in objects:
            # VOC numbers pixels from 1, inclusive: the same box is [x+1, y+1, x+w, y+h] there.
            coords = (x + 1, y + 1, x + w, y + h) if voc else (x, y, w, h)
            box_format = BoxFormat.LTRB if voc else BoxFormat.LTWH
            boxes.append(BoundingBox.create(label=name, coords=coords, box_format=box_format))
        annotations.append(Annotation(image, image_size=SIZE, boxes=boxes))
    return AnnotationSet(annotations)


def kiln_boxes(result: ImportResult) -> dict[str, list[tuple[str, list[float]]]]:
    got: dict[str, list[tuple[str, list[float]]]] = {}
    for entry in result.entries:
        assert not entry.problems, entry.problems
        labels = [(lab.label, [round(v, 6) for v in lab.bbox]) for lab in entry.labels]  # type: ignore[union-attr]
        got[Path(entry.source_name).name] = sorted(labels)
    return got


def expected() -> dict[str, list[tuple[str, list[float]]]]:
    return {image: sorted(objects) for image, objects in truth().items()}


def write_coco(root: Path) -> None:
    write_images(root / "images")
    ids = {name: i + 1 for i, name in enumerate(NAMES)}
    images = {image: n for n, image in enumerate(sorted(truth()), 1)}
    globox_set().save_coco(root / "annotations.json", label_to_id=ids, imageid_to_id=images)


def write_yolo(root: Path) -> None:
    write_images(root / "images" / "train")
    ids = {name: i for i, name in enumerate(NAMES)}
    (root / "labels" / "train").mkdir(parents=True)
    globox_set().save_yolo_darknet(root / "labels" / "train", label_to_id=ids)
    data = {"path": ".", "train": "images/train", "val": "images/train", "names": NAMES}
    (root / "data.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def write_voc(root: Path) -> None:
    write_images(root / "JPEGImages")
    (root / "Annotations").mkdir()
    globox_set(voc=True).save_pascal_voc(root / "Annotations")


WRITERS = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}


@pytest.mark.parametrize("source", sorted(WRITERS))
async def test_third_party_dataset_round_trips_through_every_format(
    source: str, tmp_path: Path
) -> None:
    WRITERS[source](tmp_path / "upload")
    result = import_dataset(tmp_path / "upload", source)
    assert result.format == source and not result.problems
    assert sorted(c.name for c in result.categories) == sorted(NAMES)
    assert kiln_boxes(result) == expected()
    for fmt in ("coco", "yolo", "voc"):
        out = await export_zip(fmt, result, tmp_path / f"{source}-{fmt}")
        again = import_dataset(out, fmt)
        assert sorted(c.name for c in again.categories) == sorted(NAMES), fmt
        assert kiln_boxes(again) == expected(), fmt
        assert read_back_by_globox(fmt, out) == expected(), fmt


def read_back_by_globox(fmt: str, out: Path) -> dict[str, list[tuple[str, list[float]]]]:
    if fmt == "coco":
        (coco_file,) = (out / "annotations").glob("instances_*.json")
        # pycocotools reads the same file, names and all.
        coco = COCO(str(coco_file))
        assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == sorted(NAMES)
        found = AnnotationSet.from_coco(coco_file)
    elif fmt == "yolo":
        data = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))
        names = dict(enumerate(data["names"])) if isinstance(data["names"], list) else data["names"]
        images = out / data["train"]
        labels = out / data["train"].replace("images", "labels", 1)
        found = AnnotationSet.from_yolo_darknet(labels, image_folder=images).map_labels(
            {str(i): name for i, name in names.items()}
        )
    else:
        found = AnnotationSet.from_pascal_voc(out / "Annotations")
    got: dict[str, list[tuple[str, list[float]]]] = {}
    for annotation in found:
        boxes = []
        for box in annotation.boxes:
            if fmt == "voc":
                left, top, right, bottom = box.ltrb
                ltwh = (left - 1, top - 1, right - left + 1, bottom - top + 1)
            else:
                ltwh = box.ltwh
            boxes.append((box.label, [round(v, 6) for v in ltwh]))
        got[Path(annotation.image_id).name] = sorted(boxes)
    return got


# --- data.yaml as people write it -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        # A quoted comma is part of the name, not a separator.
        ("names: ['tabby, tabby cat', dog]\n", ["tabby, tabby cat", "dog"]),
        # ' #' inside quotes is not a comment.
        ("names: ['c #1', 'c #2', three]  # a real comment\n", ["c #1", "c #2", "three"]),
        # YAML escapes are decoded.
        ('names: ["caf\\xE9", "\\u732B"]\n', ["café", "猫"]),
        ('names:\n  0: "caf\\xE9"\n  1: "\\u732B"\n', ["café", "猫"]),
        # The block list yaml.dump writes, with no indentation.
        ("names:\n- cat\n- dog\nnc: 2\n", ["cat", "dog"]),
        ("names:\n  0: 'tabby, tabby cat'\n  1: \"c #1\"\n", ["tabby, tabby cat", "c #1"]),
        ("names: [a, 'b c']\nkpt_shape: [17, 3]\n", ["a", "b c"]),
    ],
)
def test_data_yaml_is_read_by_a_yaml_parser(text: str, names: list[str]) -> None:
    assert parse_data_yaml(text)[0] == names


def test_data_yaml_that_is_not_yaml_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png", (8, 8))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("names: [unclosed, 'list\n")
    result = import_dataset(tmp_path, "yolo")
    assert "bad-class-names" in [p.kind for p in result.problems]


async def test_kiln_reimports_its_own_yolo_export_with_escaped_names(tmp_path: Path) -> None:
    write_yolo(tmp_path / "upload")
    result = import_dataset(tmp_path / "upload", "yolo")
    out = await export_zip("yolo", result, tmp_path)
    # Whatever the emitter chose (escapes or UTF-8), a YAML parser reads the names back.
    loaded = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))
    assert list(loaded["names"].values()) == [c.name for c in result.categories]
    assert loaded["nc"] == len(NAMES)
    again = import_dataset(out, "yolo")
    assert [c.name for c in again.categories] == [c.name for c in result.categories]


def test_voc_box_is_one_based_and_inclusive(tmp_path: Path) -> None:
    """A VOC box over pixels 1..10 (the devkit's numbering) is COCO's [0, 0, 10, 10]."""
    jpeg(tmp_path / "JPEGImages" / "a.jpg", (20, 20))
    (tmp_path / "Annotations").mkdir()
    box = "<xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>10</ymax>"
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>20</width><height>20</height>"
        f"</size><object><name>cat</name><bndbox>{box}</bndbox></object></annotation>"
    )
    result = import_dataset(tmp_path, "voc")
    assert [lab.bbox for lab in result.entries[0].labels] == [[0, 0, 10, 10]]  # type: ignore[union-attr]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8"])
def test_voc_refuses_entity_declarations_in_any_encoding(tmp_path: Path, encoding: str) -> None:
    jpeg(tmp_path / "JPEGImages" / "a.jpg", (10, 10))
    (tmp_path / "Annotations").mkdir()
    xml = (
        f'<?xml version="1.0" encoding="{encoding.upper()}"?>'
        '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
        "<annotation><filename>a.jpg</filename><object><name>&b;</name><bndbox>"
        "<xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"
    )
    (tmp_path / "Annotations" / "a.xml").write_bytes(xml.encode(encoding))
    result = import_dataset(tmp_path, "voc")
    assert [p.kind for p in result.problems] == ["bad-annotation"]
    # The image is kept, unlabelled; nothing was expanded.
    assert [(e.source_name, e.labels) for e in result.entries] == [("JPEGImages/a.jpg", [])]
