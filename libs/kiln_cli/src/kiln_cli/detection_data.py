"""The detection demo's data: scikit-learn's handwritten digits pasted at random places and
sizes onto larger noisy grey canvases, every digit's box known. Nothing is downloaded (the
digits ship inside the scikit-learn wheel)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

DIGITS = [str(d) for d in range(10)]


@dataclass
class Canvas:
    """One synthetic image: PNG bytes and its true boxes ``(digit, [x, y, w, h])``."""

    name: str
    png: bytes
    width: int
    height: int
    boxes: list[tuple[str, list[float]]]


def make_canvases(
    n: int,
    seed: int,
    size: int = 64,
    digit_px: tuple[int, int] = (22, 32),
    per_image: tuple[int, int] = (1, 2),
    prefix: str = "canvas",
) -> list[Canvas]:
    """``n`` canvases of ``size``×``size``: Gaussian noise on a random dark level, then
    ``per_image`` digits (inclusive range), each resized to a random side in ``digit_px`` and
    placed without overlapping another. A digit's box is its whole pasted square."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        canvas = rng.normal(rng.uniform(10, 50), 12, (size, size))
        boxes: list[tuple[str, list[float]]] = []
        wanted = int(rng.integers(per_image[0], per_image[1] + 1))
        for _ in range(wanted):
            side = int(rng.integers(digit_px[0], digit_px[1] + 1))
            for _attempt in range(20):
                x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
                if all(
                    x + side <= bx or bx + bw <= x or y + side <= by or by + bh <= y
                    for _, (bx, by, bw, bh) in boxes
                ):
                    break
            else:
                continue  # no room left
            k = int(rng.integers(len(digits.images)))
            glyph = Image.fromarray((digits.images[k] * 255 / 16).astype(np.uint8), mode="L")
            patch = np.asarray(glyph.resize((side, side), Image.Resampling.BILINEAR), np.float64)
            region = canvas[y : y + side, x : x + side]
            canvas[y : y + side, x : x + side] = np.maximum(region, patch)
            boxes.append((str(digits.target[k]), [float(x), float(y), float(side), float(side)]))
        buffer = io.BytesIO()
        Image.fromarray(canvas.clip(0, 255).astype(np.uint8), mode="L").save(buffer, "PNG")
        out.append(Canvas(f"{prefix}-{i:04d}.png", buffer.getvalue(), size, size, boxes))
    return out
