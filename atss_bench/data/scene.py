"""Compose one synthetic mini-COCO image and its COCO annotations.

Painting order: textured background, background clutter, an optional crowd, the objects (largest
first), then a few occluding clutter shapes. An ``owner`` map records which layer is on top of every
pixel, so each annotation describes the *visible* extent, like COCO's boxes (which are tight around
the visible segmentation): ``bbox`` is the tight box of the visible pixels, ``area`` their count and
``segmentation`` their RLE. A new layer is refused where it would leave an earlier object less than
``MIN_VISIBLE`` of its pixels, so every annotated object stays recognisable.

Box statistics follow COCO in *relative* terms (mini images are about half COCO's 640x480):
relative size ``sqrt(box area / image area)`` is log-normal with COCO's median and spread, and the
aspect ratio ``w / h`` is log-normal like COCO's (most boxes near 1:1, tails to about 1:6 and 6:1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .shapes import (category_colour, render_background, render_blob_mask,
                     render_scribble_mask, render_shape_mask, render_texture)

# Calibrated against real COCO 2017 annotations (coco-tiny, measured with atss_bench.data.stats):
# relative size median and log-spread, log aspect-ratio mean and spread. The placed boxes come out
# slightly smaller than drawn (occlusion, truncation at the border), hence a median above 0.103.
REL_SIZE_MEDIAN = 0.115
REL_SIZE_LOG_STD = 1.2
REL_SIZE_MAX = 1.0
LOG_ASPECT_MEAN = -0.14
LOG_ASPECT_STD = 0.75
ASPECT_LIMIT = 6.0
# An occluded object keeps at least this fraction of its pixels (else the placement is retried).
MIN_VISIBLE = 0.45
PLACEMENT_TRIES = 12
# Images with many objects have smaller objects (COCO does too): size x (n / 7) ** -SIZE_VS_COUNT.
SIZE_VS_COUNT = 0.2

BACKGROUND, CLUTTER = -1, -2
Category = tuple[int, str]  # (COCO category id, shape name)


@dataclass
class Scene:
    """An image being painted, with the owner of every pixel and each layer's pixel counts."""

    image: np.ndarray  # [H, W, 3] float32
    owner: np.ndarray = field(init=False)  # [H, W] int32: layer index, BACKGROUND or CLUTTER
    layers: list[tuple[int, int]] = field(default_factory=list)  # (category_id, iscrowd)
    full_pixels: list[int] = field(default_factory=list)
    visible_pixels: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.owner = np.full(self.image.shape[:2], BACKGROUND, np.int32)

    def paint(self, mask: np.ndarray, x0: int, y0: int, texture: np.ndarray,
              layer: tuple[int, int] | None, min_pixels: int = 1) -> bool:
        """Paint ``mask`` (with ``texture``, both box-sized) at ``(x0, y0)``, clipped to the image.

        ``layer`` is (category_id, iscrowd) for an annotated layer, None for clutter. Returns False
        (and paints nothing) where the clipped mask has fewer than ``min_pixels`` pixels or would
        hide too much of an earlier layer.
        """
        height, width = self.owner.shape
        ys, xs = slice(max(y0, 0), min(y0 + mask.shape[0], height)), slice(
            max(x0, 0), min(x0 + mask.shape[1], width))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            return False
        local = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
        clipped = mask[local]
        if int(clipped.sum()) < min_pixels:
            return False
        under = self.owner[ys, xs][clipped]
        covered = np.bincount(under[under >= 0], minlength=len(self.layers))
        for index in np.flatnonzero(covered):
            if self.visible_pixels[index] - covered[index] < MIN_VISIBLE * self.full_pixels[index]:
                return False
        for index in np.flatnonzero(covered):
            self.visible_pixels[index] -= int(covered[index])
        self.image[ys, xs][clipped] = texture[local][clipped]
        owner_id = CLUTTER
        if layer is not None:
            owner_id = len(self.layers)
            self.layers.append(layer)
            self.full_pixels.append(int(clipped.sum()))
            self.visible_pixels.append(int(clipped.sum()))
        self.owner[ys, xs][clipped] = owner_id
        return True

    def annotations(self) -> list[dict[str, Any]]:
        """COCO annotations (without ids) of every annotated layer, from its visible pixels."""
        result = []
        for index, (category_id, iscrowd) in enumerate(self.layers):
            visible = self.owner == index
            rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
            rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
            result.append({
                "category_id": category_id,
                "iscrowd": iscrowd,
                "bbox": [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]),
                         float(rows[-1] + 1 - rows[0])],
                "area": float(visible.sum()),
                "segmentation": {"size": list(rle["size"]),
                                 "counts": rle["counts"].decode("ascii")},
            })
        return result


def sample_box_size(rng: np.random.Generator, width: int, height: int, num_objects: int,
                    min_box_size: int) -> tuple[int, int]:
    """Box (w, h) with COCO-like relative size and aspect ratio, fitting inside the image."""
    median = REL_SIZE_MEDIAN * (max(num_objects, 1) / 7.0) ** -SIZE_VS_COUNT
    side = math.sqrt(width * height)
    for _ in range(100):
        rel = median * math.exp(rng.normal(0.0, REL_SIZE_LOG_STD))
        aspect = math.exp(rng.normal(LOG_ASPECT_MEAN, LOG_ASPECT_STD))
        if rel > REL_SIZE_MAX or not 1 / ASPECT_LIMIT <= aspect <= ASPECT_LIMIT:
            continue
        w, h = round(rel * side * math.sqrt(aspect)), round(rel * side / math.sqrt(aspect))
        if min_box_size <= min(w, h) and w <= width and h <= height:
            return w, h
    return min_box_size, min_box_size


def _random_position(rng: np.random.Generator, w: int, h: int, width: int,
                     height: int) -> tuple[int, int]:
    """Top-left corner; boxes may stick out of the image by up to 20% (truncated objects)."""
    x0 = int(rng.integers(-int(0.2 * w), max(width - int(0.8 * w), -int(0.2 * w)) + 1))
    y0 = int(rng.integers(-int(0.2 * h), max(height - int(0.8 * h), -int(0.2 * h)) + 1))
    return x0, y0


def _paint_clutter(scene: Scene, rng: np.random.Generator, count: int, max_rel: float) -> None:
    height, width = scene.owner.shape
    side = math.sqrt(width * height)
    for _ in range(count):
        w = max(3, int(side * rng.uniform(0.03, max_rel)))
        h = max(3, int(w * math.exp(rng.normal(0.0, 0.5))))
        maker = render_blob_mask if rng.random() < 0.6 else render_scribble_mask
        mask = maker(w, h, rng)
        x0, y0 = _random_position(rng, w, h, width, height)
        scene.paint(mask, x0, y0, render_texture(w, h, rng), None)


def _paint_crowd(scene: Scene, rng: np.random.Generator, category: Category,
                 min_box_size: int) -> None:
    """Many small instances of one shape inside one region, annotated as a single crowd."""
    height, width = scene.owner.shape
    rw, rh = int(width * rng.uniform(0.25, 0.5)), int(height * rng.uniform(0.2, 0.4))
    region = np.zeros((rh, rw), bool)
    texture = np.zeros((rh, rw, 3), np.float32)
    base = render_texture(rw, rh, rng)
    for _ in range(int(rng.integers(8, 25))):
        s = int(rng.integers(max(min_box_size, 4), max(min_box_size, 4) + 7))
        w, h = s, max(2, int(s * math.exp(rng.normal(0.0, 0.3))))
        x, y = int(rng.integers(0, max(rw - w, 0) + 1)), int(rng.integers(0, max(rh - h, 0) + 1))
        piece = render_shape_mask(category[1], min(w, rw - x), min(h, rh - y))
        tint = render_texture(piece.shape[1], piece.shape[0], rng)
        window = (slice(y, y + piece.shape[0]), slice(x, x + piece.shape[1]))
        texture[window][piece] = 0.5 * tint[piece] + 0.5 * base[window][piece]
        region[window] |= piece
    x0, y0 = int(rng.integers(0, width - rw + 1)), int(rng.integers(0, height - rh + 1))
    scene.paint(region, x0, y0, texture, (category[0], 1))


def compose_image(rng: np.random.Generator, width: int, height: int, *,
                  categories: Sequence[Category], num_objects: int, with_crowd: bool,
                  min_box_size: int, category_hue: bool = True,
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Paint one image; returns (uint8 RGB array [H, W, 3], annotations without ids).

    ``category_hue``: objects take colours around their category's hue (clutter and crowds stay
    random, so a colour alone never proves an object); False: random colours, shape only.
    """
    scene = Scene(render_background(width, height, rng))
    _paint_clutter(scene, rng, int(rng.integers(2, 7)), max_rel=0.2)
    if with_crowd:
        _paint_crowd(scene, rng, categories[int(rng.integers(len(categories)))], min_box_size)
    objects = []
    for _ in range(num_objects):
        w, h = sample_box_size(rng, width, height, num_objects, min_box_size)
        objects.append((w * h, w, h, categories[int(rng.integers(len(categories)))]))
    objects.sort(key=lambda item: -item[0])  # largest first: small objects end up in front
    colours = {cid: category_colour(index, len(categories))
               for index, (cid, _) in enumerate(categories)} if category_hue else {}
    for _, w, h, (category_id, shape) in objects:
        mask = render_shape_mask(shape, w, h)
        texture = render_texture(w, h, rng, colours.get(category_id))
        for _ in range(PLACEMENT_TRIES):
            x0, y0 = _random_position(rng, w, h, width, height)
            if scene.paint(mask, x0, y0, texture, (category_id, 0),
                           min_pixels=max(int(0.8 * mask.sum()), 1)):
                break
    _paint_clutter(scene, rng, int(rng.integers(0, 3)), max_rel=0.1)
    image = np.clip(np.rint(scene.image), 0, 255).astype(np.uint8)
    return image, scene.annotations()
