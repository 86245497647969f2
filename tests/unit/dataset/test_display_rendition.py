"""The thumbnail renderer: the 960 px rendition the labelling workspace shows first, made from a
JPEG decoded at a fraction of its size, never enlarged."""

from __future__ import annotations

import io

from PIL import Image

from kiln_dataset.api.media import THUMB_SIZES, render_thumbnail


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(out, format="JPEG")
    return out.getvalue()


def test_a_large_photo_gets_a_960_rendition_with_its_aspect_ratio() -> None:
    assert 960 in THUMB_SIZES
    with Image.open(io.BytesIO(render_thumbnail(jpeg(4000, 3000), 960))) as picture:
        assert picture.format == "JPEG"
        assert picture.size == (960, 720)


def test_a_portrait_photo_is_bounded_by_its_height() -> None:
    with Image.open(io.BytesIO(render_thumbnail(jpeg(1500, 3000), 512))) as picture:
        assert picture.size == (256, 512)


def test_a_small_image_is_not_enlarged() -> None:
    with Image.open(io.BytesIO(render_thumbnail(jpeg(300, 200), 960))) as picture:
        assert picture.size == (300, 200)
