"""Charts as PNGs drawn with numpy and written with zlib: no plotting library needed.

`chart` draws titled, labelled axes with round tick values, series joined by lines or as
points, and a legend naming them; `loss_curve` is the chart of a run's train and eval loss
against step (titled with the run's directory name unless given a title). Both return a
`Figure` describing what they drew, so callers and tests need not parse the image. `heatmap`
draws matrices side by side as shaded cells (attention maps, router choices), with labelled
rows and columns and optional text in the cells; it returns a `Heatmap`."""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 64, WIDTH - 24, 48, HEIGHT - 48  # the plot area's edges in pixels
SCALE = 2  # font pixels per glyph pixel: a glyph is 6x10 pixels, 8 pixels apart
TRAIN_COLOUR, EVAL_COLOUR, AXIS_COLOUR, GRID_COLOUR = (31, 119, 180), (255, 127, 14), (0, 0, 0), (225, 225, 225)

# A 3x5 pixel font: each glyph is five rows of three bits. Words are drawn in capitals; `e`
# is the exponent in tick labels (1e-3). Characters it lacks are drawn as `-`.
GLYPHS = {
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7), "4": (5, 5, 7, 1, 1),
    "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 1, 1), "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7),
    ".": (0, 0, 0, 0, 2), "-": (0, 0, 7, 0, 0), "e": (0, 7, 7, 4, 7), "+": (0, 2, 7, 2, 0), " ": (0, 0, 0, 0, 0),
    "_": (0, 0, 0, 0, 7), "/": (1, 1, 2, 4, 4), ":": (0, 2, 0, 2, 0), ",": (0, 0, 0, 2, 4), "=": (0, 7, 0, 7, 0),
    "(": (1, 2, 2, 2, 1), ")": (4, 2, 2, 2, 4), "[": (3, 2, 2, 2, 3), "]": (6, 2, 2, 2, 6), "x": (0, 5, 2, 5, 0),
    "A": (2, 5, 7, 5, 5), "B": (6, 5, 6, 5, 6), "C": (7, 4, 4, 4, 7), "D": (6, 5, 5, 5, 6), "E": (7, 4, 6, 4, 7),
    "F": (7, 4, 6, 4, 4), "G": (7, 4, 5, 5, 7), "H": (5, 5, 7, 5, 5), "I": (7, 2, 2, 2, 7), "J": (1, 1, 1, 5, 7),
    "K": (5, 5, 6, 5, 5), "L": (4, 4, 4, 4, 7), "M": (5, 7, 7, 5, 5), "N": (6, 5, 5, 5, 5), "O": (7, 5, 5, 5, 7),
    "P": (7, 5, 7, 4, 4), "Q": (7, 5, 5, 7, 1), "R": (6, 5, 6, 5, 5), "S": (7, 4, 7, 1, 7), "T": (7, 2, 2, 2, 2),
    "U": (5, 5, 5, 5, 7), "V": (5, 5, 5, 5, 2), "W": (5, 5, 7, 7, 5), "X": (5, 5, 2, 5, 5), "Y": (5, 5, 2, 2, 2),
    "Z": (7, 1, 2, 4, 7), "<": (1, 2, 4, 2, 1), ">": (4, 2, 1, 2, 4), "\\": (4, 4, 2, 1, 1), "'": (2, 2, 0, 0, 0),
    '"': (5, 5, 0, 0, 0), "!": (2, 2, 2, 0, 2), "?": (7, 1, 2, 0, 2), "#": (5, 7, 5, 7, 5), "*": (0, 5, 2, 5, 0),
    "%": (5, 1, 2, 4, 5), "|": (2, 2, 2, 2, 2), ";": (0, 2, 0, 2, 4), "{": (3, 2, 6, 2, 3), "}": (6, 2, 3, 2, 6),
    "&": (2, 5, 2, 5, 3), "@": (7, 5, 7, 4, 7), "^": (2, 5, 0, 0, 0), "~": (0, 3, 6, 0, 0), "`": (4, 2, 0, 0, 0),
    "$": (3, 6, 2, 3, 6),
}


@dataclasses.dataclass(frozen=True)
class Figure:
    """What `loss_curve` drew: its image [H, W, 3] uint8, the texts on it and the tick values."""

    image: np.ndarray
    title: str
    xlabel: str
    ylabel: str
    legend: tuple[str, ...]
    xticks: tuple[float, ...]
    yticks: tuple[float, ...]


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an RGB uint8 image [H, W, 3]."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = image.shape
    rows = b"".join(b"\x00" + image[y].tobytes() for y in range(height))  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _line(image, x0, y0, x1, y1, colour, width=1):
    steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.linspace(x0, x1, steps).round().astype(int)
    ys = np.linspace(y0, y1, steps).round().astype(int)
    for offset in range(width):
        inside = (xs >= 0) & (xs < image.shape[1]) & (ys + offset >= 0) & (ys + offset < image.shape[0])
        image[ys[inside] + offset, xs[inside]] = colour


def _glyph(character: str) -> tuple[int, ...]:
    return GLYPHS.get(character, GLYPHS["-"])


def _text_width(text: str) -> int:
    return 4 * SCALE * len(text) - SCALE if text else 0


def _text(image, x, y, text, colour=AXIS_COLOUR, words=True, vertical=False):
    """Draws text with its top-left corner at (x, y), clipped to the image: in capitals if
    `words`, else (tick labels) with `e` as the exponent's lower-case glyph; `vertical`: each
    character below the last."""
    x, y = int(x), int(y)
    for character in text.upper() if words else text:
        for row, bits in enumerate(_glyph(character)):
            for column in range(3):
                if bits >> (2 - column) & 1:
                    top, left = max(y + row * SCALE, 0), max(x + column * SCALE, 0)
                    image[top : y + (row + 1) * SCALE, left : x + (column + 1) * SCALE] = colour
        if vertical:
            y += 6 * SCALE
        else:
            x += 4 * SCALE


def _label(value: float) -> str:
    return f"{value:.3g}".replace("e+0", "e").replace("e-0", "e-")


def nice_ticks(low: float, high: float, count: int = 5, *, integer: bool = False) -> tuple[float, ...]:
    """About `count` evenly spaced round values (1, 2 or 5 times a power of ten apart, at
    least 1 apart if `integer`) whose first is at most `low` and whose last is at least `high`."""
    if not high > low:
        low, high = (low - 0.5, high + 0.5) if low == high else (high, low)
    raw = (high - low) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    step = max(step, 1.0) if integer else step
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    decimals = max(0, -math.floor(math.log10(step)))
    return tuple(round(k * step, decimals) for k in range(first, last + 1))


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    """A tick's text with as many decimals as the ticks' spacing needs (0.5, 1.0, 1.5)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    text = f"{value:.{decimals}f}"
    return text if len(text) <= 7 else _label(value)


@dataclasses.dataclass(frozen=True)
class Series:
    """One set of points on a chart: its legend name, x and y values, colour, and whether its
    points are joined by lines (a curve) or stand alone (a scatter)."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: tuple[int, int, int]
    joined: bool = True


SERIES_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194))


def chart(path: str | Path, series: Sequence[Series], *, xlabel: str, ylabel: str, title: str, integer_x: bool = False) -> Figure:
    """Writes `series` on shared axes (round ticks over the data, x from 0 when `integer_x`) as a
    PNG at `path`, with a legend of their names; returns what it drew."""
    path = Path(path)
    image = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    finite = lambda values: [v for v in values if np.isfinite(v)]
    values = finite([y for s in series for y in s.ys]) or [0.0]
    xs = finite([x for s in series for x in s.xs]) or [1.0]
    yticks = nice_ticks(min(values), max(values))
    xticks = nice_ticks(0, max([*xs, 1]), integer=True) if integer_x else nice_ticks(min(xs), max(xs))
    low, high, first, last = yticks[0], yticks[-1], xticks[0], xticks[-1]

    def to_pixel(x, value):
        return LEFT + (RIGHT - LEFT) * (x - first) / (last - first), BOTTOM - (BOTTOM - TOP) * (value - low) / (high - low)

    glyph_height = 5 * SCALE
    for value in yticks:
        y = to_pixel(first, value)[1]
        _line(image, LEFT, y, RIGHT, y, GRID_COLOUR)
        _line(image, LEFT - 4, y, LEFT, y, AXIS_COLOUR)
        text = _tick_label(value, yticks)
        _text(image, LEFT - 8 - _text_width(text), y - glyph_height // 2, text, words=False)
    for value in xticks:
        x = to_pixel(value, low)[0]
        _line(image, x, TOP, x, BOTTOM, GRID_COLOUR)
        _line(image, x, BOTTOM, x, BOTTOM + 4, AXIS_COLOUR)
        text = _tick_label(value, xticks)
        _text(image, x - _text_width(text) / 2, BOTTOM + 8, text, words=False)
    _line(image, LEFT, TOP, LEFT, BOTTOM, AXIS_COLOUR)
    _line(image, LEFT, BOTTOM, RIGHT, BOTTOM, AXIS_COLOUR)

    _text(image, (LEFT + RIGHT - _text_width(xlabel)) / 2, BOTTOM + 8 + glyph_height + 8, xlabel)
    _text(image, max(4, LEFT - 8 - _text_width(ylabel)), TOP - glyph_height - 10, ylabel)  # over the axis, in the image
    fits = (WIDTH - 16) // (4 * SCALE)
    shown = title if len(title) <= fits else title[: fits - 2] + ".."
    _text(image, (WIDTH - _text_width(shown)) / 2, 10, shown)

    drawn = [s for s in series if finite(s.ys)]
    for s in drawn:
        points = [to_pixel(x, v) for x, v in zip(s.xs, s.ys) if np.isfinite(v)]
        if s.joined:
            for (x0, y0), (x1, y1) in zip(points, points[1:]):
                _line(image, x0, y0, x1, y1, s.colour)
        size = 1 if s.joined else 3
        for x, y in points:
            image[max(int(y) - size, 0) : int(y) + size + 1, max(int(x) - size, 0) : int(x) + size + 1] = s.colour

    # The legend: a boxed swatch and name per series, in the plot's top-right corner.
    box_width = 8 + 20 + 6 + max([_text_width(s.name) for s in drawn] or [0]) + 8
    box_left, box_top = RIGHT - 8 - box_width, TOP + 8
    box_bottom = box_top + 6 + len(drawn) * (glyph_height + 6)
    image[box_top:box_bottom, box_left : RIGHT - 8] = 255
    for x0, y0, x1, y1 in ((box_left, box_top, RIGHT - 8, box_top), (box_left, box_bottom, RIGHT - 8, box_bottom),
                           (box_left, box_top, box_left, box_bottom), (RIGHT - 8, box_top, RIGHT - 8, box_bottom)):
        _line(image, x0, y0, x1, y1, GRID_COLOUR)
    for index, s in enumerate(drawn):
        y = box_top + 6 + index * (glyph_height + 6)
        _line(image, box_left + 8, y + glyph_height // 2 - 1, box_left + 28, y + glyph_height // 2 - 1, s.colour, width=3)
        _text(image, box_left + 34, y, s.name)

    path.write_bytes(png_bytes(image))
    return Figure(image, title, xlabel, ylabel, tuple(s.name for s in drawn), xticks, yticks)


def loss_curve(
    path: str | Path,
    steps: Sequence[int],
    losses: Sequence[float],
    eval_steps: Sequence[int] = (),
    eval_losses: Sequence[float] = (),
    *,
    title: str | None = None,
) -> Figure:
    """Writes training loss (blue) and evaluation loss (orange) against step as a PNG at
    `path` and returns what it drew. `title` defaults to the run: the name of the directory
    holding `path` (runs/tiny/loss.png is titled `tiny`)."""
    path = Path(path)
    title = path.resolve().parent.name if title is None else title
    series = [Series("train", steps, losses, TRAIN_COLOUR), Series("eval", eval_steps, eval_losses, EVAL_COLOUR)]
    return chart(path, series, xlabel="step", ylabel="loss", title=title, integer_x=True)


@dataclasses.dataclass(frozen=True)
class Panel:
    """One matrix of a heatmap: its title, values [R, C] (shaded from white at `low` to dark
    blue at `high`; NaN cells left grey) and optionally a short text per cell [R][C]."""

    title: str
    values: np.ndarray
    texts: Sequence[Sequence[str]] | None = None
    low: float = 0.0
    high: float = 1.0


@dataclasses.dataclass(frozen=True)
class Heatmap:
    """What `heatmap` drew: its image [H, W, 3] uint8, the title, each panel's title and the labels."""

    image: np.ndarray
    title: str
    panels: tuple[str, ...]
    row_labels: tuple[str, ...]
    column_labels: tuple[str, ...]


DARK, MISSING = np.array((8, 48, 107)), (200, 200, 200)
LABEL_CHARACTERS = 8  # a row or column label is cut to this many characters


def heatmap(
    path: str | Path, panels: Sequence[Panel], *, title: str, row_labels: Sequence[str], column_labels: Sequence[str],
    per_row: int = 4,
) -> Heatmap:
    """Writes `panels` (all [R, C], R = len(row_labels), C = len(column_labels)) as a PNG at
    `path`, `per_row` to a row of panels: each a grid of shaded cells under its title, the row
    labels to its left and the column labels below it, written downwards; returns what it drew."""
    rows, columns = len(row_labels), len(column_labels)
    for panel in panels:
        if np.shape(panel.values) != (rows, columns):
            raise ValueError(f"panel {panel.title!r} is {np.shape(panel.values)}, not [{rows}, {columns}] like its labels")
    texts = any(panel.texts is not None for panel in panels)
    cell = max(8 * SCALE if texts else 4, min(48 if texts else 32, 480 // max(rows, columns, 1)))
    rows_text = [label[:LABEL_CHARACTERS] for label in row_labels]
    columns_text = [label[:LABEL_CHARACTERS] for label in column_labels]
    glyph_height, pitch = 5 * SCALE, 6 * SCALE
    label_width = max(map(_text_width, rows_text), default=0) + 8
    label_height = max(map(len, columns_text), default=0) * pitch + 8
    panel_width, panel_height = label_width + columns * cell + 16, glyph_height + 10 + rows * cell + label_height
    across = max(1, min(per_row, len(panels)))
    down = math.ceil(len(panels) / across)
    width = max(across * panel_width + 16, _text_width(title) + 32)
    image = np.full((40 + down * (panel_height + 16), width, 3), 255, np.uint8)
    _text(image, (width - _text_width(title)) / 2, 12, title)
    for index, panel in enumerate(panels):
        left = 16 + (index % across) * panel_width + label_width
        top = 40 + (index // across) * (panel_height + 16)
        _text(image, left, top, panel.title[: columns * cell // (4 * SCALE) or 1])
        top += glyph_height + 10
        values = np.asarray(panel.values, np.float64)
        span = panel.high - panel.low or 1.0
        share = np.clip((values - panel.low) / span, 0.0, 1.0)
        for r in range(rows):
            for c in range(columns):
                y, x = top + r * cell, left + c * cell
                colour = MISSING if np.isnan(values[r, c]) else (255 - share[r, c] * (255 - DARK)).round().astype(np.uint8)
                image[y : y + cell - 1, x : x + cell - 1] = colour
                if panel.texts is not None and panel.texts[r][c]:
                    shown = panel.texts[r][c][: max(1, (cell - 2) // (4 * SCALE))]
                    ink = (255, 255, 255) if share[r, c] > 0.5 and not np.isnan(values[r, c]) else AXIS_COLOUR
                    _text(image, x + (cell - _text_width(shown)) / 2, y + (cell - glyph_height) / 2, shown, ink)
        for r, label in enumerate(rows_text):
            _text(image, left - 8 - _text_width(label), top + r * cell + (cell - glyph_height) / 2, label)
        for c, label in enumerate(columns_text):
            _text(image, left + c * cell + (cell - 3 * SCALE) / 2, top + rows * cell + 6, label, vertical=True)
    Path(path).write_bytes(png_bytes(image))
    return Heatmap(image, title, tuple(p.title for p in panels), tuple(row_labels), tuple(column_labels))
