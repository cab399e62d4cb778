"""loss.png: a titled chart with labelled axes, round ticks and a legend, checked on the
Figure that loss_curve returns (no image parsing) and on the PNG it writes."""

import struct
import zlib

import numpy as np
import pytest

from zoo.train import plot


def pixels_of(image, colour):
    return int(np.all(image == np.array(colour, np.uint8), axis=-1).sum())


def test_the_figure_has_a_title_axis_labels_and_a_legend(tmp_path):
    run = tmp_path / "tiny"
    run.mkdir()
    steps = list(range(0, 301, 10))
    losses = [2 + 6 * np.exp(-s / 80) for s in steps]
    figure = plot.loss_curve(run / "loss.png", steps, losses, steps[::10], [v + 0.2 for v in losses[::10]])
    assert figure.title == "tiny"  # the run: the directory holding loss.png
    assert (figure.xlabel, figure.ylabel) == ("step", "loss")
    assert figure.legend == ("train", "eval")
    assert figure.xticks == (0, 100, 200, 300) and figure.yticks == (2, 4, 6, 8, 10)
    assert pixels_of(figure.image, plot.TRAIN_COLOUR) and pixels_of(figure.image, plot.EVAL_COLOUR)
    assert figure.image.shape == (plot.HEIGHT, plot.WIDTH, 3)
    # The title is drawn: the band above the plot area holds dark pixels, centred.
    band = np.all(figure.image[: plot.TOP - 20] == 0, axis=-1)
    columns = np.flatnonzero(band.any(axis=0))
    assert len(columns) and abs((columns[0] + columns[-1]) / 2 - plot.WIDTH / 2) < 8


def test_the_png_holds_the_figure_and_a_given_title_wins(tmp_path):
    figure = plot.loss_curve(tmp_path / "loss.png", [1, 2, 3], [2.351, 2.340, float("nan")], title="tiny: 3.5M params")
    assert figure.title == "tiny: 3.5M params" and figure.legend == ("train",)  # no eval points: no eval entry
    data = (tmp_path / "loss.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    length = struct.unpack(">I", data[33:37])[0]
    rows = np.frombuffer(zlib.decompress(data[41 : 41 + length]), np.uint8).reshape(height, 1 + width * 3)
    assert np.array_equal(rows[:, 1:].reshape(height, width, 3), figure.image)


@pytest.mark.parametrize("low, high, integer, expected", [
    (2.31, 2.37, False, (2.3, 2.32, 2.34, 2.36, 2.38)),
    (0, 1, False, (0, 0.2, 0.4, 0.6, 0.8, 1)),
    (3, 3, False, (2.4, 2.6, 2.8, 3.0, 3.2, 3.4, 3.6)),  # a flat curve still gets a range
    (0, 2, True, (0, 1, 2)),  # steps: whole numbers
    (0, 12345, True, (0, 5000, 10000, 15000)),
])
def test_ticks_are_round_and_cover_the_data(low, high, integer, expected):
    ticks = plot.nice_ticks(low, high, integer=integer)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= low and ticks[-1] >= high
    assert all(plot._tick_label(t, ticks).replace(".", "").isdigit() for t in ticks)


def test_a_scatter_chart_draws_its_points_and_a_long_axis_label_inside_the_image(tmp_path):
    series = [plot.Series("gqa", [256, 512], [300.0, 230.0], plot.SERIES_COLOURS[0], joined=False),
              plot.Series("mla", [640], [185.0], plot.SERIES_COLOURS[1], joined=False)]
    figure = plot.chart(tmp_path / "chart.png", series, xlabel="kv bytes per token", ylabel="perplexity", title="surgery")
    assert figure.legend == ("gqa", "mla") and figure.xticks[0] <= 256 and figure.xticks[-1] >= 640
    assert pixels_of(figure.image, plot.SERIES_COLOURS[0]) and pixels_of(figure.image, plot.SERIES_COLOURS[1])
    label_band = figure.image[plot.TOP - 20 : plot.TOP - 10]  # the y label's row, over the axis
    assert not np.all(label_band[:, :100] == 255) and np.all(label_band[:, 200:] == 255)  # drawn at the left, nowhere else
