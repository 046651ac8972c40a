"""The IoU rule of RetinaNet (paper Table 1/2, "Intersection over Union")."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

from atss_bench.assign._common import (
    ATSS_INSIDE_MARGIN,
    BACKGROUND,
    IGNORE,
    check_inputs,
    empty_result,
)
from atss_bench.boxes import box_centers, ltrb_distances
from atss_bench.errors import ConfigError


def assign_max_iou(
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    *,
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.4,
    low_quality_matches: bool = True,
    center_in_gt: bool = False,
) -> Tensor:
    """Label anchors by their best IoU with a GT (torchvision ``Matcher`` semantics).

    anchors [N, 4]; gt_boxes [B, M, 4] padded, gt_valid [B, M]. Returns int64 [B, N]: the index
    of the matched GT slot (>= 0), BACKGROUND (-1) or IGNORE (-2).

    1. IoU of every anchor with every valid GT of its image; each anchor's best GT (ties: lowest
       GT index).
    2. best IoU >= fg_iou_thresh: matched to that GT; < bg_iou_thresh: BACKGROUND; in between:
       IGNORE.
    3. low_quality_matches: for each GT, every anchor whose IoU equals that GT's maximum IoU
       (ties included) is matched to its *own* best GT, whatever its IoU. A GT whose maximum IoU
       is 0 (zero area, outside the image) makes no such match; torchvision's Matcher would
       match every anchor then.
    4. center_in_gt (Table 1 "In GT Box"): a matched anchor whose centre is not inside its GT
       (min(l, t, r, b) > 0.01, as in the official ATSS code) becomes IGNORE.
    num_anchors_per_level is not used by this rule.
    """
    check_inputs(anchors, num_anchors_per_level, gt_boxes, gt_valid)
    if not 0.0 <= bg_iou_thresh <= fg_iou_thresh <= 1.0:
        raise ConfigError(
            f"assign: need 0 <= bg_iou_thresh ({bg_iou_thresh}) <= "
            f"fg_iou_thresh ({fg_iou_thresh}) <= 1"
        )
    batch_size, num_gt = gt_valid.shape
    num_anchors = anchors.shape[0]
    if num_anchors == 0 or num_gt == 0:
        return empty_result(batch_size, num_anchors, anchors.device)

    gt_boxes = gt_boxes.to(anchors.dtype)
    iou = box_iou(gt_boxes.reshape(-1, 4), anchors).reshape(batch_size, num_gt, num_anchors)
    iou = iou.masked_fill(~gt_valid[:, :, None], -1.0)  # [B, M, N]; padding never wins
    best_iou, best_gt = iou.max(dim=1)  # [B, N]
    matched = torch.where(
        best_iou >= fg_iou_thresh,
        best_gt,
        torch.where(best_iou >= bg_iou_thresh, IGNORE, BACKGROUND),
    )  # [B, N]

    if low_quality_matches:
        gt_max_iou = iou.amax(dim=2, keepdim=True)  # [B, M, 1]
        reaches_max = (iou == gt_max_iou) & (gt_max_iou > 0)  # [B, M, N]
        matched = torch.where(reaches_max.any(dim=1), best_gt, matched)

    if center_in_gt:
        images = torch.arange(batch_size, device=anchors.device)[:, None]  # [B, 1]
        matched_boxes = gt_boxes[images, matched.clamp(min=0)]  # [B, N, 4]
        sides = ltrb_distances(box_centers(anchors)[None], matched_boxes)  # [B, N, 4]
        inside = sides.amin(dim=2) > ATSS_INSIDE_MARGIN  # [B, N]
        matched = torch.where((matched >= 0) & ~inside, IGNORE, matched)
    return matched  # [B, N]
