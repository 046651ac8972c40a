"""The anchors training uses for an image, without building a network.

``DenseDetector`` zero-pads a batch to sides divisible by ``size_divisibility`` and generates the
anchors of each FPN map it gets (``DenseDetector.anchors_per_level``). Every down-sampling step of
the backbone and of P6 / P7 is a stride-2 convolution or pooling with ``padding = kernel // 2``,
which maps a side n to ceil(n / 2); so the map of stride s over a padded side n has ceil(n / s)
cells (exact for s <= size_divisibility, and the same rounding above it). A test checks this
against a real detector's feature maps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from atss_bench.boxes import generate_anchors
from atss_bench.config import ModelConfig
from atss_bench.model.detector import AnchorSettings


def build_anchor_settings(config: ModelConfig) -> AnchorSettings:
    """The detector's anchor settings for ``config`` (as ``build_detector`` makes them)."""
    anchors = config.anchors
    return AnchorSettings(tuple(config.fpn.strides), anchors.octave_base_scale,
                          anchors.scales_per_octave, tuple(anchors.aspect_ratios),
                          anchors.offset)


def padded_size(height: int, width: int, size_divisibility: int) -> tuple[int, int]:
    """(height, width) zero-padded up to multiples of ``size_divisibility`` (the detector's)."""
    div = size_divisibility
    return int(math.ceil(height / div) * div), int(math.ceil(width / div) * div)


def feature_sizes(padded_hw: tuple[int, int], strides: tuple[int, ...]) -> list[tuple[int, int]]:
    """(height, width) of each pyramid map of a padded image: ceil(side / stride)."""
    height, width = padded_hw
    return [(-(-height // s), -(-width // s)) for s in strides]


@dataclass(frozen=True)
class ImageAnchors:
    """All anchors of one padded size: ``anchors`` float32 [N, 4] level by level, location-major
    (``boxes.generate_anchors``), ``num_anchors_per_level`` and ``levels`` int64 [N] (0 = the
    finest level); the grid: ``feature_sizes`` and ``strides`` per level,
    ``num_anchors_per_location`` A, and ``half_sizes`` float64 [L, A, 2]: (w / 2, h / 2) of the
    A anchors of a location."""

    anchors: Tensor
    num_anchors_per_level: list[int]
    levels: Tensor
    feature_sizes: list[tuple[int, int]]
    strides: tuple[int, ...]
    num_anchors_per_location: int
    half_sizes: Tensor

    @property
    def level_starts(self) -> list[int]:
        """Index of each level's first anchor."""
        starts = [0]
        for count in self.num_anchors_per_level[:-1]:
            starts.append(starts[-1] + count)
        return starts


def anchors_for_padded_size(settings: AnchorSettings, padded_hw: tuple[int, int],
                            device: torch.device | str = "cpu") -> ImageAnchors:
    """What ``DenseDetector.anchors_per_level`` gives for a batch padded to ``padded_hw``."""
    sizes = feature_sizes(padded_hw, settings.strides)
    per_level = generate_anchors(sizes, settings.strides, settings.octave_base_scale,
                                 settings.scales_per_octave, settings.aspect_ratios,
                                 device=device, dtype=torch.float32, offset=settings.offset)
    counts = [len(a) for a in per_level]
    levels = torch.repeat_interleave(torch.arange(len(counts), device=device),
                                     torch.tensor(counts, device=device))
    num_per_location = settings.num_anchors_per_location
    half_sizes = torch.stack([
        (a[:num_per_location, 2:] - a[:num_per_location, :2]).double() / 2 if len(a)
        else torch.zeros((num_per_location, 2), dtype=torch.float64, device=device)
        for a in per_level])  # [L, A, 2]
    return ImageAnchors(torch.cat(per_level), counts, levels, sizes, tuple(settings.strides),
                        num_per_location, half_sizes)
