"""Plain references for the assignment rules, and the random scenes the property tests use.

Each reference loops over GTs one at a time and states its rule literally; ties between GTs go
to the earlier GT (strict improvement only), ties between anchors to the lower anchor index
(stable sort). Shared with benchmarks/bench_assign.py.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_iou

from atss_bench.boxes import generate_anchors

IMAGE_SIZE = (800, 1216)  # (height, width)
STRIDES = (8, 16, 32, 64, 128)
FCOS_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf))


def make_anchors(num_anchors_per_location: int, image_size=IMAGE_SIZE) -> tuple[Tensor, list[int]]:
    """P3-P7 anchors: #A=1 is one 8S square (ATSS), #A=9 is RetinaNet's 3 scales x 3 ratios."""
    height, width = image_size
    sizes = [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]
    if num_anchors_per_location == 1:
        levels = generate_anchors(sizes, STRIDES, 8.0, 1, (1.0,))
    elif num_anchors_per_location == 9:
        levels = generate_anchors(sizes, STRIDES, 4.0, 3, (0.5, 1.0, 2.0))
    else:
        raise ValueError(num_anchors_per_location)
    return torch.cat(levels), [len(a) for a in levels]


def random_gt_boxes(
    generator: torch.Generator, num_gt: int, integer: bool, image_size=IMAGE_SIZE
) -> Tensor:
    """num_gt boxes of 4-600 px sides inside the image; integer coordinates make ties common."""
    height, width = image_size
    wh = 4 + torch.rand(num_gt, 2, generator=generator) * 596
    wh = torch.minimum(wh, torch.tensor([float(width), float(height)]))
    x0 = torch.rand(num_gt, generator=generator) * (width - wh[:, 0])
    y0 = torch.rand(num_gt, generator=generator) * (height - wh[:, 1])
    boxes = torch.stack((x0, y0, x0 + wh[:, 0], y0 + wh[:, 1]), dim=1)
    return boxes.round() if integer else boxes


def _centers(boxes: Tensor) -> tuple[Tensor, Tensor]:
    return (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2


def _per_anchor(values, num_anchors_per_level) -> Tensor:
    return torch.cat([torch.full((n,), float(v)) for v, n in zip(values, num_anchors_per_level)])


def _sides(cx: Tensor, cy: Tensor, box: Tensor) -> Tensor:
    """[n, 4] distances (l, t, r, b) from points to one box."""
    return torch.stack((cx - box[0], cy - box[1], box[2] - cx, box[3] - cy), dim=1)


def reference_candidates(cx, cy, gt_box, num_anchors_per_level, k) -> Tensor:
    """Indices of the min(k, N_l) anchors per level closest to the GT centre (stable ties)."""
    gx, gy = (gt_box[0] + gt_box[2]) / 2, (gt_box[1] + gt_box[3]) / 2
    chosen, start = [], 0
    for num in num_anchors_per_level:
        dx, dy = cx[start:start + num] - gx, cy[start:start + num] - gy
        order = torch.argsort(dx * dx + dy * dy, stable=True)
        chosen.append(order[:min(k, num)] + start)
        start += num
    return torch.cat(chosen)


def reference_max_iou(anchors, gt_boxes, fg_iou_thresh=0.5, bg_iou_thresh=0.4,
                      low_quality_matches=True, center_in_gt=False) -> Tensor:
    num_anchors = len(anchors)
    result = torch.full((num_anchors,), -1, dtype=torch.int64)
    if len(gt_boxes) == 0:
        return result
    iou = box_iou(anchors, gt_boxes)
    best_iou = torch.full((num_anchors,), -math.inf)
    best_gt = torch.zeros(num_anchors, dtype=torch.int64)
    for j in range(len(gt_boxes)):
        better = iou[:, j] > best_iou
        best_iou[better] = iou[better, j]
        best_gt[better] = j
    result[best_iou >= fg_iou_thresh] = best_gt[best_iou >= fg_iou_thresh]
    result[(best_iou >= bg_iou_thresh) & (best_iou < fg_iou_thresh)] = -2
    if low_quality_matches:
        for j in range(len(gt_boxes)):
            top = iou[:, j].max()
            if top > 0:
                ties = iou[:, j] == top
                result[ties] = best_gt[ties]
    if center_in_gt:
        cx, cy = _centers(anchors)
        for j, box in enumerate(gt_boxes):
            outside = _sides(cx, cy, box).min(dim=1).values <= 0.01
            result[(result == j) & outside] = -2
    return result


def reference_fcos(anchors, num_anchors_per_level, gt_boxes, strides, scale_ranges,
                   center_sampling_radius=None) -> Tensor:
    num_anchors = len(anchors)
    cx, cy = _centers(anchors)
    lo = _per_anchor([r[0] for r in scale_ranges], num_anchors_per_level)
    hi = _per_anchor([r[1] for r in scale_ranges], num_anchors_per_level)
    stride = _per_anchor(strides, num_anchors_per_level)
    result = torch.full((num_anchors,), -1, dtype=torch.int64)
    best_area = torch.full((num_anchors,), math.inf)
    for j, box in enumerate(gt_boxes):
        sides = _sides(cx, cy, box)
        if center_sampling_radius is None:
            inside = sides.min(dim=1).values > 0
        else:
            gx, gy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            radius = center_sampling_radius * stride
            inside = (
                (cx > torch.maximum(gx - radius, box[0]))
                & (cx < torch.minimum(gx + radius, box[2]))
                & (cy > torch.maximum(gy - radius, box[1]))
                & (cy < torch.minimum(gy + radius, box[3]))
            )
        reach = sides.max(dim=1).values
        area = (box[2] - box[0]) * (box[3] - box[1])
        better = inside & (reach >= lo) & (reach <= hi) & (area < best_area)
        result[better] = j
        best_area[better] = area
    return result


def reference_topk_scale(anchors, num_anchors_per_level, gt_boxes, strides, scale_ranges,
                         topk=9, num_anchors_per_location=1) -> Tensor:
    num_anchors = len(anchors)
    cx, cy = _centers(anchors)
    lo = _per_anchor([r[0] for r in scale_ranges], num_anchors_per_level)
    hi = _per_anchor([r[1] for r in scale_ranges], num_anchors_per_level)
    result = torch.full((num_anchors,), -1, dtype=torch.int64)
    best_area = torch.full((num_anchors,), math.inf)
    for j, box in enumerate(gt_boxes):
        k = topk * num_anchors_per_location
        cand = reference_candidates(cx, cy, box, num_anchors_per_level, k)
        sides = _sides(cx[cand], cy[cand], box)
        reach = sides.max(dim=1).values
        area = (box[2] - box[0]) * (box[3] - box[1])
        ok = (sides.min(dim=1).values > 0) & (reach >= lo[cand]) & (reach <= hi[cand])
        better = cand[ok & (area < best_area[cand])]
        result[better] = j
        best_area[better] = area
    return result


def reference_atss(anchors, num_anchors_per_level, gt_boxes, topk=9,
                   num_anchors_per_location=1) -> Tensor:
    num_anchors = len(anchors)
    cx, cy = _centers(anchors)
    result = torch.full((num_anchors,), -1, dtype=torch.int64)
    if len(gt_boxes) == 0 or num_anchors == 0:
        return result
    iou = box_iou(anchors, gt_boxes)
    best_iou = torch.full((num_anchors,), -math.inf)
    for j, box in enumerate(gt_boxes):
        k = topk * num_anchors_per_location
        cand = reference_candidates(cx, cy, box, num_anchors_per_level, k)
        cand_iou = iou[cand, j]
        values = cand_iou.double()
        threshold = values.mean() + (values.std() if len(values) > 1 else 0.0)
        inside = _sides(cx[cand], cy[cand], box).min(dim=1).values > 0.01
        ok = (values >= threshold) & inside & (cand_iou > best_iou[cand])
        result[cand[ok]] = j
        best_iou[cand[ok]] = cand_iou[ok]
    return result
