"""Box geometry shared by the assigners and the detector: anchors, points and the two coders.

Boxes are (x0, y0, x1, y1) in pixels. Every function follows its inputs' device and dtype.

Anchor layout (what ``atss_bench.assign`` expects): one tensor per pyramid level, location-major:
locations in row-major order (y, then x), and the A = len(aspect_ratios) * scales_per_octave anchors
of one location adjacent. Within a location the order is ratio-major, then scale:
``index = ratio_index * scales_per_octave + scale_index`` (torchvision's AnchorGenerator order).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
BOX_CODER_CLAMP = math.log(1000.0 / 16)
# Anchor half-sizes are rounded to this grid (1/256 px) so that x0 + x1 is exact in float32 and
# every anchor of a location has bit-for-bit the same centre (the assigners rely on it).
_HALF_SIZE_GRID = 256.0


def _location_centers(height: int, width: int, stride: int, device, dtype,
                      offset: float = 0.5) -> Tensor:
    """Centres ((x + offset) * stride, (y + offset) * stride) of a [height, width] map,
    row-major."""
    xs = (torch.arange(width, device=device, dtype=torch.float64) + offset) * stride
    ys = (torch.arange(height, device=device, dtype=torch.float64) + offset) * stride
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=1).to(dtype)  # [H*W, 2]


def _base_half_sizes(
    stride: int, octave_base_scale: float, scales_per_octave: int, aspect_ratios: Sequence[float]
) -> list[tuple[float, float]]:
    """(w/2, h/2) of the A anchors of one location, ratio-major then scale."""
    half_sizes = []
    for ratio in aspect_ratios:  # ratio = h / w
        for i in range(scales_per_octave):
            base = octave_base_scale * stride * 2.0 ** (i / scales_per_octave)
            w, h = base / math.sqrt(ratio), base * math.sqrt(ratio)
            half_sizes.append(
                (round(w / 2 * _HALF_SIZE_GRID) / _HALF_SIZE_GRID,
                 round(h / 2 * _HALF_SIZE_GRID) / _HALF_SIZE_GRID)
            )
    return half_sizes


def generate_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    octave_base_scale: float,
    scales_per_octave: int,
    aspect_ratios: Sequence[float],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    offset: float = 0.5,
) -> list[Tensor]:
    """Anchors of every level: a list of [H*W*A, 4] tensors (layout in the module docstring).

    The anchor of scale i and ratio r (= h / w) at a location with centre c has
    base = octave_base_scale * stride * 2 ** (i / scales_per_octave), w = base / sqrt(r),
    h = base * sqrt(r), and box c -/+ (w/2, h/2), half-sizes rounded to 1/256 px.
    The centre of feature cell (x, y) is ((x + offset) * stride, (y + offset) * stride): 0.5 is
    the official ATSS / FCOS grid, 0.0 torchvision's AnchorGenerator.
    """
    if len(feature_sizes) != len(strides):
        raise ValueError(f"{len(feature_sizes)} feature sizes but {len(strides)} strides")
    anchors_per_level = []
    for (height, width), stride in zip(feature_sizes, strides):
        half = torch.tensor(
            _base_half_sizes(stride, octave_base_scale, scales_per_octave, aspect_ratios),
            device=device, dtype=torch.float64,
        )  # [A, 2]
        base = torch.cat((-half, half), dim=1)  # [A, 4]
        centers = _location_centers(height, width, stride, device, torch.float64,
                                    offset)  # [H*W, 2]
        shifts = centers.repeat(1, 2)  # [H*W, 4]
        anchors = (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)  # [H*W*A, 4]
        anchors_per_level.append(anchors.to(dtype))
    return anchors_per_level


def generate_points(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """Location centres of every level: a list of [H*W, 2] (x, y) tensors, row-major.

    They equal the anchor centres of ``generate_anchors`` (and FCOS's x * stride + stride // 2
    for even strides).
    """
    if len(feature_sizes) != len(strides):
        raise ValueError(f"{len(feature_sizes)} feature sizes but {len(strides)} strides")
    return [_location_centers(h, w, s, device, dtype) for (h, w), s in zip(feature_sizes, strides)]


def box_centers(boxes: Tensor) -> Tensor:
    """[..., 4] boxes -> [..., 2] centres ((x0 + x1) / 2, (y0 + y1) / 2)."""
    return torch.stack(
        ((boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2), dim=-1
    )


def ltrb_distances(points: Tensor, boxes: Tensor) -> Tensor:
    """Distances from points to box sides, [..., 2] and [..., 4] broadcast -> [..., 4] (l, t, r, b).

    All four are > 0 exactly when the point is strictly inside the box. For all pairs use
    ``ltrb_distances(points[:, None], boxes[None])`` -> [N, M, 4].
    """
    x, y = points[..., 0], points[..., 1]
    return torch.stack(
        (x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y), dim=-1
    )


def encode_boxes(
    reference_boxes: Tensor, anchors: Tensor, weights: Sequence[float] = BOX_CODER_WEIGHTS
) -> Tensor:
    """Regression targets (dx, dy, dw, dh) * weights of boxes [N, 4] w.r.t. anchors [N, 4].

    torchvision's BoxCoder (the Detectron/RetinaNet parametrisation).
    """
    return BoxCoder(tuple(weights)).encode_single(reference_boxes, anchors)


def decode_boxes(
    deltas: Tensor,
    anchors: Tensor,
    weights: Sequence[float] = BOX_CODER_WEIGHTS,
    clamp: float = BOX_CODER_CLAMP,
) -> Tensor:
    """Inverse of ``encode_boxes``: deltas [N, 4] on anchors [N, 4] -> boxes [N, 4].

    dw and dh (after dividing by their weights) are clamped at ``clamp`` before exp().
    """
    return BoxCoder(tuple(weights), clamp).decode_single(deltas, anchors)


def encode_points(points: Tensor, boxes: Tensor, strides: Tensor | float) -> Tensor:
    """Point regression targets: ltrb distances of points [N, 2] to boxes [N, 4] / stride.

    ``strides`` is one number or a per-point [N] tensor.
    """
    strides = torch.as_tensor(strides, dtype=points.dtype, device=points.device)
    return ltrb_distances(points, boxes) / strides.reshape(-1, 1)


def decode_points(deltas: Tensor, points: Tensor, strides: Tensor | float) -> Tensor:
    """Inverse of ``encode_points``: ltrb deltas [N, 4] at points [N, 2] -> boxes [N, 4]."""
    strides = torch.as_tensor(strides, dtype=deltas.dtype, device=deltas.device)
    distances = deltas * strides.reshape(-1, 1)  # [N, 4]
    x, y = points[:, 0], points[:, 1]
    return torch.stack(
        (x - distances[:, 0], y - distances[:, 1], x + distances[:, 2], y + distances[:, 3]), dim=1
    )
