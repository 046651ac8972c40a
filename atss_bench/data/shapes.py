"""Shape masks, textures and category colours for the synthetic mini-COCO generator.

Every object category is one shape class. Its instances' colours are drawn around the category's
own hue (:func:`category_colour`), as real categories have a typical look, or, with
``category_hue`` off, at random, so that only the shape tells the category. The texture pattern
(solid, stripes, checks, gradient) is random per instance either way. Masks are boolean arrays
``[h, w]`` drawn with PIL so that the shape fills its box (it touches, or nearly touches, all four
sides); the generator computes the final, tight box from the visible pixels anyway.
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

Points = list[tuple[float, float]]


def _polygon(points: Points, width: int, height: int) -> Points:
    """Map points given in the unit square [0, 1]^2 to pixel corners of a ``width x height`` box."""
    return [(x * (width - 1), y * (height - 1)) for x, y in points]


def _star_points(num_tips: int = 5, inner: float = 0.45) -> Points:
    angles = [math.pi / 2 + i * math.pi / num_tips for i in range(2 * num_tips)]
    radii = [1.0 if i % 2 == 0 else inner for i in range(2 * num_tips)]
    xs = [r * math.cos(a) for r, a in zip(radii, angles)]
    ys = [-r * math.sin(a) for r, a in zip(radii, angles)]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return [((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)) for x, y in zip(xs, ys)]


_STAR = _star_points()
_TRIANGLE: Points = [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]
_ARROW: Points = [(0.0, 0.35), (0.55, 0.35), (0.55, 0.0), (1.0, 0.5), (0.55, 1.0), (0.55, 0.65),
                  (0.0, 0.65)]
_CROSS: Points = [(0.35, 0.0), (0.65, 0.0), (0.65, 0.35), (1.0, 0.35), (1.0, 0.65), (0.65, 0.65),
                  (0.65, 1.0), (0.35, 1.0), (0.35, 0.65), (0.0, 0.65), (0.0, 0.35), (0.35, 0.35)]


def _draw_disc(draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    draw.ellipse((0, 0, w - 1, h - 1), fill=1)


def _draw_square(draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    draw.rectangle((0, 0, w - 1, h - 1), fill=1)


def _draw_ring(draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    draw.ellipse((0, 0, w - 1, h - 1), fill=1)
    tx, ty = max(1.0, 0.22 * w), max(1.0, 0.22 * h)
    if w - 1 - 2 * tx > 0 and h - 1 - 2 * ty > 0:
        draw.ellipse((tx, ty, w - 1 - tx, h - 1 - ty), fill=0)


def _draw_crescent(draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    draw.ellipse((0, 0, w - 1, h - 1), fill=1)
    shift = 0.4 * w
    draw.ellipse((shift, -0.1 * h, w - 1 + shift, 1.1 * (h - 1)), fill=0)


def _polygon_drawer(points: Points) -> Callable[[ImageDraw.ImageDraw, int, int], None]:
    def draw_polygon(draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
        draw.polygon(_polygon(points, w, h), fill=1)

    return draw_polygon


# The closed table of shape classes, in category order.
SHAPES: dict[str, Callable[[ImageDraw.ImageDraw, int, int], None]] = {
    "disc": _draw_disc,
    "square": _draw_square,
    "triangle": _polygon_drawer(_TRIANGLE),
    "ring": _draw_ring,
    "cross": _polygon_drawer(_CROSS),
    "star": _polygon_drawer(_STAR),
    "crescent": _draw_crescent,
    "arrow": _polygon_drawer(_ARROW),
}


def render_shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """Boolean mask ``[height, width]`` of ``shape`` filling a ``width x height`` box."""
    canvas = Image.new("1", (width, height), 0)
    SHAPES[shape](ImageDraw.Draw(canvas), width, height)
    return np.asarray(canvas, dtype=bool)


def render_blob_mask(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """An irregular, many-lobed blob: clutter that belongs to no category."""
    num_vertices = int(rng.integers(9, 17))
    angles = np.sort(rng.uniform(0.0, 2 * math.pi, num_vertices))
    radii = rng.uniform(0.25, 1.0, num_vertices)
    xs = 0.5 + 0.5 * radii * np.cos(angles)
    ys = 0.5 + 0.5 * radii * np.sin(angles)
    canvas = Image.new("1", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(_polygon(list(zip(xs, ys)), width, height), fill=1)
    return np.asarray(canvas, dtype=bool)


def render_scribble_mask(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A thick random polyline: clutter that belongs to no category."""
    num_points = int(rng.integers(3, 7))
    points = [(float(x), float(y)) for x, y in zip(rng.uniform(0, width - 1, num_points),
                                                   rng.uniform(0, height - 1, num_points))]
    line_width = max(1, int(min(width, height) * rng.uniform(0.05, 0.15)))
    canvas = Image.new("1", (width, height), 0)
    ImageDraw.Draw(canvas).line(points, fill=1, width=line_width)
    return np.asarray(canvas, dtype=bool)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, 3).astype(np.float32)


# Spread (standard deviation, 0..255 per channel) of an instance's colours around its category's.
CATEGORY_COLOUR_STD = 25.0


def category_colour(index: int, num_categories: int) -> np.ndarray:
    """The typical RGB colour (float32, 0..255) of category ``index``: hues evenly spaced."""
    return np.asarray(colorsys.hsv_to_rgb(index / num_categories, 0.8, 0.9),
                      np.float32) * 255.0


def render_texture(width: int, height: int, rng: np.random.Generator,
                   colour: np.ndarray | None = None) -> np.ndarray:
    """An RGB texture ``[height, width, 3]`` (float32, 0..255): solid, stripes, checks or a
    gradient between two colours, plus pixel noise. The two colours are random, or, given
    ``colour``, each drawn around it (``CATEGORY_COLOUR_STD`` per channel)."""
    if colour is None:
        first, second = _random_colour(rng), _random_colour(rng)
    else:
        first, second = (np.clip(colour + rng.normal(0.0, CATEGORY_COLOUR_STD, 3), 0.0, 255.0)
                         .astype(np.float32) for _ in range(2))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = int(rng.integers(0, 4))
    if kind == 0:  # solid
        weight = np.zeros((height, width), np.float32)
    elif kind == 1:  # stripes at a random angle and period
        angle, period = rng.uniform(0, math.pi), rng.uniform(3.0, 10.0)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
        weight = (np.floor(phase) % 2).astype(np.float32)
    elif kind == 2:  # checks
        cell = rng.uniform(3.0, 8.0)
        weight = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2).astype(np.float32)
    else:  # linear gradient
        angle = rng.uniform(0, 2 * math.pi)
        phase = xs * math.cos(angle) + ys * math.sin(angle)
        span = max(float(phase.max() - phase.min()), 1.0)
        weight = (phase - phase.min()) / span
    texture = first + weight[..., None] * (second - first)
    texture += rng.normal(0.0, rng.uniform(2.0, 12.0), texture.shape).astype(np.float32)
    return texture


def render_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy, low-frequency coloured background ``[height, width, 3]`` (float32, 0..255)."""
    base = rng.uniform(40.0, 215.0, 3)
    grid = np.clip(base + rng.uniform(-70.0, 70.0, (int(rng.integers(2, 7)),
                                                   int(rng.integers(2, 7)), 3)), 0, 255)
    smooth = Image.fromarray(grid.astype(np.uint8), "RGB").resize((width, height),
                                                                  Image.Resampling.BICUBIC)
    background = np.asarray(smooth, dtype=np.float32).copy()
    detail = rng.uniform(0, 255, (max(2, height // 6), max(2, width // 6), 3)).astype(np.uint8)
    detail_up = Image.fromarray(detail, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    background += (np.asarray(detail_up, dtype=np.float32) - 127.5) * rng.uniform(0.05, 0.25)
    background += rng.normal(0.0, rng.uniform(3.0, 10.0), background.shape).astype(np.float32)
    return background
