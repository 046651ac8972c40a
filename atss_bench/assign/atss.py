"""Adaptive Training Sample Selection (the paper's Algorithm 1)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

from atss_bench.assign._common import (
    ATSS_INSIDE_MARGIN,
    check_inputs,
    check_positive_int,
    empty_result,
    resolve_claims,
    select_candidates,
)
from atss_bench.boxes import box_centers, ltrb_distances


def assign_atss(
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    *,
    topk: int = 9,
    num_anchors_per_location: int = 1,
) -> Tensor:
    """Per GT, an IoU threshold from the statistics of its closest anchors.

    anchors [N, 4]; gt_boxes [B, M, 4] padded, gt_valid [B, M]. Returns int64 [B, N]: GT slot
    index or BACKGROUND (-1); this rule never ignores.

    1. Candidates: per GT and level, the topk * num_anchors_per_location anchors whose centres
       are closest (L2) to the GT centre, capped by the level's anchor count (ties at the k-th
       distance: lower anchor index). K candidates per GT over all levels.
    2. IoU of each GT with its K candidates.
    3. Threshold t_g = mean + std of those K IoUs (unbiased std over all levels together, as in
       the official code), computed in float64 so that K equal IoUs give t_g equal to them.
       K == 1 (std undefined): std = 0, so the single candidate passes step 4.
    4. Positive: candidate IoU >= t_g and its centre inside the GT, min(l, t, r, b) > 0.01.
    5. An anchor positive for several GTs goes to the one with the highest IoU (exact ties:
       lowest GT index); everything else is BACKGROUND.
    """
    check_inputs(anchors, num_anchors_per_level, gt_boxes, gt_valid)
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
    iou = box_iou(anchors[candidates], gt_flat[:, None, :])[:, :, 0]  # [C, K]

    iou64 = iou.double()
    threshold = iou64.mean(dim=1, keepdim=True)  # [C, 1]
    if candidates.shape[1] > 1:
        threshold = threshold + iou64.std(dim=1, keepdim=True)
    sides = ltrb_distances(centers[candidates], gt_flat[:, None, :])  # [C, K, 4]
    inside = sides.amin(dim=2) > ATSS_INSIDE_MARGIN  # [C, K]
    positive = (iou64 >= threshold) & inside & gt_valid.reshape(-1, 1)  # [C, K]
    scores = torch.where(positive, iou, -math.inf)  # [C, K]
    return resolve_claims(candidates, scores, batch_size, num_gt, num_anchors)  # [B, N]
