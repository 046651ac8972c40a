"""Pictures: the GT boxes and the positives' centres are where they should be in the PNG."""
from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgb
from PIL import Image

from atss_bench.inspect.draw import (
    GT_COLOR,
    LEVEL_COLORS,
    Panel,
    grid_shape,
    render_assignments,
    save_figure,
)

GREY = np.full((120, 160, 3), 128, dtype=np.uint8)
BOX = np.array([[20.0, 30.0, 100.0, 90.0]])


def _png_pixels(figure, path):
    save_figure(figure, path)
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _to_pixel(ax, x, y, png_height):
    """Data (image) coordinates -> (row, column) in the saved PNG."""
    display_x, display_y = ax.transData.transform((x, y))
    return round(png_height - display_y), round(display_x)


def _near(pixels, row, col, color, radius=2, tolerance=40):
    patch = pixels[row - radius:row + radius + 1, col - radius:col + radius + 1]
    target = np.array(to_rgb(color)) * 255
    return bool((np.abs(patch - target).max(axis=-1) <= tolerance).any())


def test_gt_edges_and_positive_centres_are_drawn(tmp_path):
    panels = [Panel("fcos: 2 positives", np.array([[40.0, 60.0], [80.0, 60.0]]), np.array([0, 1])),
              Panel("atss: 0 positives", np.zeros((0, 2)), np.zeros(0, dtype=int))]
    figure = render_assignments(GREY, BOX, panels, ["P3", "P4"], title="image 1")
    pixels = _png_pixels(figure, tmp_path / "two.png")
    assert pixels.shape[:2] == (int(figure.get_figheight() * 100), int(figure.get_figwidth() * 100))
    height = pixels.shape[0]
    for ax in figure.axes[:2]:
        x0, y0, x1, y1 = BOX[0]
        for x, y in [((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2),
                     (x1, (y0 + y1) / 2)]:  # the middle of each edge is GT green
            assert _near(pixels, *_to_pixel(ax, x, y, height), GT_COLOR), (ax.get_title(), x, y)
        inside = _to_pixel(ax, 60.0, 45.0, height)  # inside the box, away from the edges: grey
        assert not _near(pixels, *inside, GT_COLOR, radius=3)
        assert _near(pixels, *inside, "#808080", radius=0, tolerance=3)
    fcos, atss = figure.axes[:2]
    assert _near(pixels, *_to_pixel(fcos, 40.0, 60.0, height), LEVEL_COLORS[0], radius=1)
    assert _near(pixels, *_to_pixel(fcos, 80.0, 60.0, height), LEVEL_COLORS[1], radius=1)
    assert not _near(pixels, *_to_pixel(atss, 40.0, 60.0, height), LEVEL_COLORS[0], radius=3)
    assert fcos.get_title() == "fcos: 2 positives"


def test_overlays_change_the_picture(tmp_path):
    empty = [Panel("rule", np.zeros((0, 2)), np.zeros(0, dtype=int))]
    plain = _png_pixels(render_assignments(GREY, np.zeros((0, 4)), empty, ["P3"]),
                        tmp_path / "a.png")
    boxed = _png_pixels(render_assignments(GREY, BOX, empty, ["P3"]), tmp_path / "b.png")
    assert plain.shape == boxed.shape
    changed = np.abs(plain - boxed).max(axis=-1) > 60
    # about the perimeter of the box, a few pixels wide, at the panel's scale
    assert 300 < changed.sum() < 6000


def test_grid_shapes():
    assert [grid_shape(n) for n in (1, 2, 3, 4)] == [(1, 1), (1, 2), (1, 3), (2, 2)]
