"""An example plug-in rule: ATSS with a fixed IoU floor.

ATSS sets each GT's IoU threshold from its candidates' statistics (mean + std). On a GT whose
closest anchors all overlap it poorly that threshold is low too, so poor anchors become positives.
This variant never lets the threshold fall below ``iou_floor``.

The contract (``atss-bench check-rule examples/my_rule.py:assign_atss_floor``): the
single-image signature of ``atss_bench.assign.assign`` without the strategy, params after the
first three arguments (set under ``model.assign.params`` in a recipe), and one int64 label per
anchor: the index of its GT, -1 background or -2 ignored. Plain tensor code, no package edits.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

BACKGROUND = -1


def assign_atss_floor(anchors: Tensor, num_anchors_per_level: list[int], gt_boxes: Tensor,
                      topk: int = 9, iou_floor: float = 0.2) -> Tensor:
    """anchors [N, 4], gt_boxes [M, 4] (x0, y0, x1, y1) -> int64 [N]: GT index or -1."""
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    matched = torch.full((num_anchors,), BACKGROUND, dtype=torch.int64, device=anchors.device)
    if num_gt == 0 or num_anchors == 0:
        return matched
    iou = box_iou(anchors, gt_boxes)  # [N, M]
    anchor_xy = (anchors[:, :2] + anchors[:, 2:]) / 2  # [N, 2]
    gt_xy = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # [M, 2]
    distance = torch.cdist(anchor_xy, gt_xy)  # [N, M]

    # 1. Candidates: per level, the topk anchors closest to each GT centre (ties: lower index).
    candidates = []
    start = 0
    for count in num_anchors_per_level:
        level = distance[start:start + count]  # [N_l, M]
        k = min(topk, count)
        if k:
            order = torch.sort(level, dim=0, stable=True).indices[:k]  # [k, M]
            candidates.append(order + start)
        start += count
    candidates = torch.cat(candidates)  # [K, M]

    # 2. Threshold per GT: max(mean + std of its candidates' IoUs, iou_floor).
    candidate_iou = iou.gather(0, candidates).double()  # [K, M]
    std = candidate_iou.std(dim=0) if candidates.shape[0] > 1 else candidate_iou[0] * 0
    threshold = torch.clamp(candidate_iou.mean(dim=0) + std, min=iou_floor)  # [M]

    # 3. Positive: candidate above the threshold with its centre inside the GT.
    positive = torch.zeros((num_anchors, num_gt), dtype=torch.bool, device=anchors.device)
    centre = anchor_xy[candidates]  # [K, M, 2]
    inside = ((centre > gt_boxes[:, :2]) & (centre < gt_boxes[:, 2:])).all(dim=2)  # [K, M]
    keep = (candidate_iou >= threshold) & inside  # [K, M]
    columns = torch.arange(num_gt, device=anchors.device).expand_as(candidates)
    positive[candidates[keep], columns[keep]] = True

    # 4. An anchor positive for several GTs goes to the highest IoU (ties: lower GT index).
    scores = torch.where(positive, iou, -1.0)  # [N, M]
    best = scores.max(dim=1).values  # [N]
    gt_index = torch.arange(num_gt, device=anchors.device)
    first = torch.where(scores == best[:, None], gt_index, num_gt).min(dim=1).values
    return torch.where(best >= 0, first, matched)
