"""What an uploaded file really is: media type from magic bytes, pixel size, whether it decodes."""

from __future__ import annotations

import io
import warnings
from pathlib import Path, PurePath

from PIL import Image, UnidentifiedImageError

from kiln_core.errors import ValidationFailed

# Enough bytes for every signature below (WebP needs 12, TIFF 4, the longest ftyp brand 12).
SNIFF_BYTES = 32

EXTENSIONS: dict[str, str] = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".jfif": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".dib": "image/bmp",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
IMAGE_EXTENSIONS = frozenset(EXTENSIONS)

# The extension written for each media type when a file has to be named from scratch.
PREFERRED_EXTENSION: dict[str, str] = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/webp": ".webp",
    "image/tiff": ".tif",
}


class UnreadableImage(ValidationFailed, ValueError):
    """The bytes are not an image Pillow can read; ``reason`` says why, for the user."""

    type, title = "unreadable-image", "Unreadable image"

    def __init__(self, reason: str) -> None:
        ValidationFailed.__init__(self, reason)  # explicit: mypy loses super() over the mix-in
        self.reason = reason


def sniff(head: bytes) -> str | None:
    """The media type of a file from its first bytes (:data:`SNIFF_BYTES` suffice), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    # "BM" alone is too weak: also require a known DIB header size at offset 14.
    if head.startswith(b"BM") and len(head) >= 18 and head[14] in (12, 40, 52, 56, 64, 108, 124):
        return "image/bmp"
    return None


def extension_matches(filename: str, media_type: str | None) -> bool:
    """Whether the file name's extension is one used for ``media_type`` (case-insensitive)."""
    return EXTENSIONS.get(PurePath(filename).suffix.lower()) == media_type


def image_size(source: Path | str | bytes) -> tuple[int, int]:
    """``(width, height)`` from the image header, without decoding pixels."""
    try:
        with _open(source) as image:
            return image.size
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"image is too large to process: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImage(_reason(exc)) from exc


def verify_image(source: Path | str | bytes) -> tuple[int, int]:
    """Fully decode the image; return ``(width, height)`` or raise :class:`UnreadableImage`."""
    try:
        # verify() checks structure (CRCs for PNG) but leaves the image unusable, hence the reopen.
        with _open(source) as image:
            image.verify()
        with _open(source) as image:
            image.load()
            return image.size
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"image is too large to process: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImage(_reason(exc)) from exc


def _open(source: Path | str | bytes) -> Image.Image:
    with warnings.catch_warnings():
        # Over Pillow's pixel limit is reported as an error, not a warning the caller never sees.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except Image.DecompressionBombWarning as exc:
            raise UnreadableImage(f"image is too large to process: {exc}") from exc
        except FileNotFoundError as exc:
            raise UnreadableImage("file not found") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image format we can read"
    text = str(exc).strip()
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return "image file is truncated"
    return f"image data is corrupt ({text or type(exc).__name__})"
