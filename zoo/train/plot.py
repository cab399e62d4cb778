"""A loss-curve PNG drawn with numpy and written with zlib: no plotting library needed."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

WIDTH, HEIGHT, MARGIN = 640, 400, 40
TRAIN_COLOUR, EVAL_COLOUR, AXIS_COLOUR, GRID_COLOUR = (31, 119, 180), (255, 127, 14), (0, 0, 0), (225, 225, 225)

# A 3x5 pixel font for axis labels: each glyph is five rows of three bits.
GLYPHS = {
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7), "4": (5, 5, 7, 1, 1),
    "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 1, 1), "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7),
    ".": (0, 0, 0, 0, 2), "-": (0, 0, 7, 0, 0), "e": (0, 7, 7, 4, 7), "+": (0, 2, 7, 2, 0),
}


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an RGB uint8 image [H, W, 3]."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = image.shape
    rows = b"".join(b"\x00" + image[y].tobytes() for y in range(height))  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _line(image, x0, y0, x1, y1, colour):
    steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.linspace(x0, x1, steps).round().astype(int)
    ys = np.linspace(y0, y1, steps).round().astype(int)
    inside = (xs >= 0) & (xs < image.shape[1]) & (ys >= 0) & (ys < image.shape[0])
    image[ys[inside], xs[inside]] = colour


def _text(image, x, y, text, scale=2):
    for glyph in text:
        for row, bits in enumerate(GLYPHS.get(glyph, (0,) * 5)):
            for column in range(3):
                if bits >> (2 - column) & 1:
                    image[y + row * scale : y + (row + 1) * scale, x + column * scale : x + (column + 1) * scale] = AXIS_COLOUR
        x += 4 * scale


def _label(value: float) -> str:
    return f"{value:.3g}".replace("e+0", "e").replace("e-0", "e-")


def loss_curve(path: str | Path, steps: Sequence[int], losses: Sequence[float], eval_steps: Sequence[int] = (), eval_losses: Sequence[float] = ()) -> None:
    """Writes training loss (blue) and evaluation loss (orange) against step as a PNG."""
    image = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    values = [v for v in (*losses, *eval_losses) if np.isfinite(v)] or [0.0]
    low, high = min(values), max(values)
    high = high if high > low else low + 1.0
    last = max([*steps, *eval_steps, 1])
    left, right, top, bottom = MARGIN + 20, WIDTH - MARGIN, MARGIN, HEIGHT - MARGIN

    def to_pixel(step, value):
        return left + (right - left) * step / last, bottom - (bottom - top) * (value - low) / (high - low)

    for fraction in np.linspace(0, 1, 5):
        y = bottom - (bottom - top) * fraction
        _line(image, left, y, right, y, GRID_COLOUR)
        _text(image, 4, int(y) - 5, _label(low + fraction * (high - low)))
    _line(image, left, top, left, bottom, AXIS_COLOUR)
    _line(image, left, bottom, right, bottom, AXIS_COLOUR)
    _text(image, right - 4 * 2 * len(str(last)), bottom + 8, str(last))
    _text(image, left, bottom + 8, "0")
    for xs, ys, colour in ((steps, losses, TRAIN_COLOUR), (eval_steps, eval_losses, EVAL_COLOUR)):
        points = [to_pixel(s, v) for s, v in zip(xs, ys) if np.isfinite(v)]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            _line(image, x0, y0, x1, y1, colour)
        for x, y in points:
            image[max(int(y) - 1, 0) : int(y) + 2, max(int(x) - 1, 0) : int(x) + 2] = colour
    Path(path).write_bytes(png_bytes(image))
