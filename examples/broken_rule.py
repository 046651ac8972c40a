"""A deliberately broken plug-in rule, to see what ``atss-bench check-rule`` reports.

    atss-bench check-rule examples/broken_rule.py:assign_nearest   # exit 1

Each anchor goes to the GT whose centre is nearest, if that centre is within ``radius`` pixels.
The bug: with no GT it still answers 0 (``argmin`` over an empty dimension is replaced by 0),
i.e. a positive for a GT that does not exist. The checker prints the failing check
("no positives without GTs", "label space") and the minimal scene: an image with 0 GTs.
"""
from __future__ import annotations

import torch
from torch import Tensor


def assign_nearest(anchors: Tensor, num_anchors_per_level: list[int], gt_boxes: Tensor,
                   radius: float = 24.0) -> Tensor:
    anchor_xy = (anchors[:, :2] + anchors[:, 2:]) / 2  # [N, 2]
    if gt_boxes.shape[0] == 0:
        return torch.zeros(anchors.shape[0], dtype=torch.int64)  # BUG: should be -1
    gt_xy = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # [M, 2]
    distance = torch.cdist(anchor_xy, gt_xy)  # [N, M]
    nearest = distance.min(dim=1)
    return torch.where(nearest.values <= radius, nearest.indices, -1)
