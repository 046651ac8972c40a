"""Top-k + scale: the paper's "lite" ATSS, called center sampling in Table 3."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_area

from atss_bench.assign._common import (
    FCOS_INSIDE_MARGIN,
    check_inputs,
    check_per_level,
    check_positive_int,
    check_scale_ranges,
    empty_result,
    expand_per_level,
    resolve_claims,
    select_candidates,
)
from atss_bench.boxes import box_centers, ltrb_distances


def assign_topk_scale(
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    *,
    strides: Sequence[int],
    scale_ranges: Sequence[Sequence[float]],
    topk: int = 9,
    num_anchors_per_location: int = 1,
) -> Tensor:
    """FCOS's scale constraint, applied only to the anchors closest to each GT centre.

    anchors [N, 4]; gt_boxes [B, M, 4] padded, gt_valid [B, M]. Returns int64 [B, N]: GT slot
    index or BACKGROUND (-1); this rule never ignores.

    1. Candidates: per GT and level, the topk * num_anchors_per_location anchors whose centres
       are closest (L2) to the GT centre, capped by the level's anchor count (ties at the k-th
       distance: lower anchor index).
    2. A candidate is positive when its centre is strictly inside the GT (min(l, t, r, b) > 0)
       and lo <= max(l, t, r, b) <= hi for (lo, hi) = scale_ranges of its level (inclusive).
    3. An anchor positive for several GTs goes to the one of smallest area (ties: lowest GT
       index); everything else is BACKGROUND.
    ``strides`` is only checked (one per level), for symmetry with the FCOS rule.
    """
    check_inputs(anchors, num_anchors_per_level, gt_boxes, gt_valid)
    num_levels = len(num_anchors_per_level)
    check_per_level("strides", strides, num_levels)
    check_scale_ranges(scale_ranges, num_levels)
    check_positive_int("topk", topk)
    check_positive_int("num_anchors_per_location", num_anchors_per_location)
    batch_size, num_gt = gt_valid.shape
    num_anchors = anchors.shape[0]
    if num_anchors == 0 or num_gt == 0:
        return empty_result(batch_size, num_anchors, anchors.device)

    gt_flat = gt_boxes.to(anchors.dtype).reshape(-1, 4)  # [C, 4], C = B * M
    centers = box_centers(anchors)  # [N, 2]
    candidates = select_candidates(
        centers, box_centers(gt_flat), num_anchors_per_level, topk * num_anchors_per_location
    )  # [C, K]
    sides = ltrb_distances(centers[candidates], gt_flat[:, None, :])  # [C, K, 4]
    reach = sides.amax(dim=2)  # [C, K]
    lo = expand_per_level([r[0] for r in scale_ranges], num_anchors_per_level, anchors)[candidates]
    hi = expand_per_level([r[1] for r in scale_ranges], num_anchors_per_level, anchors)[candidates]
    positive = (
        (sides.amin(dim=2) > FCOS_INSIDE_MARGIN) & (reach >= lo) & (reach <= hi)
        & gt_valid.reshape(-1, 1)
    )  # [C, K]
    smaller_is_better = -box_area(gt_flat)[:, None]  # [C, 1]
    scores = torch.where(positive, smaller_is_better, -math.inf)  # [C, K]
    return resolve_claims(candidates, scores, batch_size, num_gt, num_anchors)  # [B, N]
