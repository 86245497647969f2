"""Media sniffing, extension checks and image decoding."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from kiln_dataset.media import (
    SNIFF_BYTES,
    UnreadableImage,
    extension_matches,
    image_size,
    sniff,
    verify_image,
)


def encode(fmt: str, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 30, 90) if mode == "RGB" else 0).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("GIF", "image/gif"),
        ("BMP", "image/bmp"),
        ("WEBP", "image/webp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_sniff_recognises_real_image_bytes(fmt: str, media_type: str) -> None:
    assert sniff(encode(fmt)[:SNIFF_BYTES]) == media_type


def test_sniff_returns_none_for_unknown_bytes() -> None:
    assert sniff(b"%PDF-1.7\n") is None
    assert sniff(b"") is None
    assert sniff(b"BM but not a bitmap at all") is None


def test_jpg_name_with_png_bytes_is_a_mismatch() -> None:
    media_type = sniff(encode("PNG"))
    assert media_type == "image/png"
    assert not extension_matches("photo.jpg", media_type)
    assert extension_matches("photo.PNG", media_type)
    assert extension_matches("photo.jpeg", "image/jpeg")
    assert not extension_matches("photo", media_type)


def test_image_size_reads_the_header_from_bytes_and_paths(tmp_path: Path) -> None:
    data = encode("PNG", (123, 45))
    (tmp_path / "a.png").write_bytes(data)
    assert image_size(data) == (123, 45)
    assert image_size(tmp_path / "a.png") == (123, 45)


def test_image_size_of_a_header_cut_short_raises_unreadable_image() -> None:
    with pytest.raises(UnreadableImage):
        image_size(encode("JPEG")[:20])


def test_image_size_of_non_image_raises_unreadable_image_with_reason() -> None:
    with pytest.raises(UnreadableImage, match="not an image") as info:
        image_size(b"hello world, not an image")
    assert isinstance(info.value, ValueError)


def test_truncated_jpeg_fails_verification_with_a_readable_reason(tmp_path: Path) -> None:
    data = encode("JPEG", (256, 256))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert image_size(path) == (256, 256)  # the header survives the cut
    with pytest.raises(UnreadableImage, match="truncated"):
        verify_image(path)


def test_corrupt_png_fails_verification(tmp_path: Path) -> None:
    data = bytearray(encode("PNG", (64, 64)))
    data[-30] ^= 0xFF  # damage the image data, breaking its CRC
    with pytest.raises(UnreadableImage):
        verify_image(bytes(data))


def test_valid_image_verifies_and_returns_its_size(tmp_path: Path) -> None:
    path = tmp_path / "ok.webp"
    path.write_bytes(encode("WEBP", (17, 9)))
    assert verify_image(path) == (17, 9)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match="not found"):
        image_size(tmp_path / "nope.png")
