"""FCOS's spatial and scale constraint (paper Table 2, "Spatial and Scale Constraint")."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_area

from atss_bench.assign._common import (
    BACKGROUND,
    check_inputs,
    check_per_level,
    check_scale_ranges,
    count_anchors_per_location,
    empty_result,
    expand_per_level,
)
from atss_bench.boxes import box_centers
from atss_bench.errors import ConfigError


def assign_fcos(
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    *,
    strides: Sequence[int],
    scale_ranges: Sequence[Sequence[float]],
    center_sampling_radius: float | None = None,
) -> Tensor:
    """Positives are locations inside a GT whose regression reach suits their level.

    anchors [N, 4]: their centres are the locations; all anchors of one location get the same
    answer (computed once per location). gt_boxes [B, M, 4] padded, gt_valid [B, M].
    Returns int64 [B, N]: GT slot index or BACKGROUND (-1); this rule never ignores.

    1. l, t, r, b: distances from each anchor centre to each GT's sides.
    2. Inside: min(l, t, r, b) > 0 (strictly). With center_sampling_radius, instead strictly
       inside the GT-centred square of half-side radius * (the location's level stride),
       clipped to the GT (FCOS's center sampling).
    3. Scale: lo <= max(l, t, r, b) <= hi, (lo, hi) = scale_ranges of the anchor's level
       (inclusive; hi may be inf).
    4. A location meeting both for several GTs goes to the one of smallest area (ties: lowest
       GT index); everything else is BACKGROUND.
    """
    check_inputs(anchors, num_anchors_per_level, gt_boxes, gt_valid)
    num_levels = len(num_anchors_per_level)
    check_per_level("strides", strides, num_levels)
    check_scale_ranges(scale_ranges, num_levels)
    if center_sampling_radius is not None and not center_sampling_radius > 0:
        raise ConfigError(
            f"assign: center_sampling_radius must be > 0, got {center_sampling_radius}"
        )
    batch_size, num_gt = gt_valid.shape
    num_anchors = anchors.shape[0]
    if num_anchors == 0 or num_gt == 0:
        return empty_result(batch_size, num_anchors, anchors.device)

    gt_flat = gt_boxes.to(anchors.dtype).reshape(-1, 4)  # [C, 4], C = B * M
    centers = box_centers(anchors)  # [N, 2]
    per_location = count_anchors_per_location(centers, num_anchors_per_level)
    points = centers[::per_location]  # [L, 2] one per location
    num_points_per_level = [n // per_location for n in num_anchors_per_level]

    px, py = points[None, :, 0], points[None, :, 1]  # [1, L]
    x0, y0, x1, y1 = gt_flat[:, 0:1], gt_flat[:, 1:2], gt_flat[:, 2:3], gt_flat[:, 3:4]  # [C, 1]
    left, top, right, bottom = px - x0, py - y0, x1 - px, y1 - py  # [C, L]
    reach = torch.maximum(torch.maximum(left, top), torch.maximum(right, bottom))  # [C, L]
    lo = expand_per_level([r[0] for r in scale_ranges], num_points_per_level, anchors)
    hi = expand_per_level([r[1] for r in scale_ranges], num_points_per_level, anchors)
    positive = (reach >= lo) & (reach <= hi) & gt_valid.reshape(-1, 1)  # [C, L]
    if center_sampling_radius is None:
        positive &= torch.minimum(torch.minimum(left, top), torch.minimum(right, bottom)) > 0
    else:
        radius = center_sampling_radius * expand_per_level(strides, num_points_per_level, anchors)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2  # [C, 1]
        positive &= (px > torch.maximum(cx - radius, x0)) & (px < torch.minimum(cx + radius, x1))
        positive &= (py > torch.maximum(cy - radius, y0)) & (py < torch.minimum(cy + radius, y1))

    area = box_area(gt_flat)[:, None]  # [C, 1]
    cost = torch.where(positive, area, math.inf).reshape(batch_size, num_gt, -1)  # [B, M, L]
    min_area, gt_index = cost.min(dim=1)  # [B, L]
    matched = torch.where(min_area < math.inf, gt_index, BACKGROUND)  # [B, L]
    return matched.repeat_interleave(per_location, dim=1)  # [B, N]
