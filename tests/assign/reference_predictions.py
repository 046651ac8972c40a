"""Plain loop references for the prediction-aware rules (task-aligned, SimOTA), and scenes.

Written from the papers' and mmdetection's descriptions one GT and one anchor at a time, with
Python sorting (stable: ties to the lower anchor index) and strict-improvement loops (ties to the
lower GT index). Slow on purpose; the scenes are small.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from atss_bench.assign.predictions import pairwise_iou
from tests.assign.reference import STRIDES


def iou_one(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _f32(value: float) -> float:
    """Round like the float32 IoU the rules compute before going to float64."""
    return float(torch.tensor(value, dtype=torch.float32))


def reference_task_aligned(anchors: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                           pred_scores: Tensor, pred_boxes: Tensor, topk: int = 13,
                           alpha: float = 1.0, beta: float = 6.0) -> Tensor:
    num_anchors = anchors.shape[0]
    result = [-1] * num_anchors
    best_iou = [-math.inf] * num_anchors
    anchor_list, iou_rows = anchors.tolist(), iou_table(gt_boxes, pred_boxes)
    for g, gt in enumerate(gt_boxes.tolist()):
        label = int(gt_labels[g])
        ious = iou_rows[g]
        metric = [float(pred_scores[n, label].double()) ** alpha * ious[n] ** beta
                  for n in range(num_anchors)]
        order = sorted(range(num_anchors), key=lambda n: -metric[n])[:topk]  # stable
        for n in order:
            x0, y0, x1, y1 = anchor_list[n]
            cx, cy = _f32((x0 + x1) / 2), _f32((y0 + y1) / 2)
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > 0.01
            if metric[n] > 0 and inside and ious[n] > best_iou[n]:
                best_iou[n], result[n] = ious[n], g
    return torch.tensor(result, dtype=torch.int64)


def iou_table(gt_boxes: Tensor, pred_boxes: Tensor) -> list[list[float]]:
    """[M][N] IoUs in float32 as the rules compute them (IoU itself is not under test here;
    ``test_pairwise_iou_matches_the_plain_formula`` checks it against ``iou_one``)."""
    return pairwise_iou(gt_boxes[None], pred_boxes[None])[0].double().tolist()


def reference_simota(anchors: Tensor, num_anchors_per_level: list[int], gt_boxes: Tensor,
                     gt_labels: Tensor, pred_scores: Tensor, pred_boxes: Tensor,
                     center_radius: float = 2.5, candidate_topk: int = 10,
                     iou_weight: float = 3.0, cls_weight: float = 1.0) -> Tensor:
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    if num_gt == 0:
        return torch.full((num_anchors,), -1, dtype=torch.int64)
    strides = [s for s, n in zip(STRIDES, num_anchors_per_level) for _ in range(n)]
    gts, iou_rows = gt_boxes.tolist(), iou_table(gt_boxes, pred_boxes)
    centres = [(_f32((a[0] + a[2]) / 2), _f32((a[1] + a[3]) / 2)) for a in anchors.tolist()]

    def in_box(n: int, g: int) -> bool:
        (cx, cy), gt = centres[n], gts[g]
        return min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > 0

    def in_centre(n: int, g: int) -> bool:
        (cx, cy), gt = centres[n], gts[g]
        gx, gy = _f32((gt[0] + gt[2]) / 2), _f32((gt[1] + gt[3]) / 2)
        r = center_radius * strides[n]
        return min(cx - _f32(gx - r), cy - _f32(gy - r), _f32(gx + r) - cx,
                   _f32(gy + r) - cy) > 0

    candidates = [n for n in range(num_anchors)
                  if any(in_box(n, g) or in_centre(n, g) for g in range(num_gt))]
    cost: dict[tuple[int, int], float] = {}
    taken: dict[int, list[int]] = {}
    scores = pred_scores.double()
    for g in range(num_gt):
        label = int(gt_labels[g])
        ious = {n: iou_rows[g][n] for n in candidates}
        for n in candidates:
            bce = 0.0
            for c in range(scores.shape[1]):
                p = float(scores[n, c])
                log = max(math.log(p), -100.0) if p > 0 else -100.0
                log_not = max(math.log1p(-p), -100.0) if p < 1 else -100.0
                bce += -log if c == label else -log_not
            outside = 0.0 if in_box(n, g) and in_centre(n, g) else 1e5
            cost[g, n] = cls_weight * bce + iou_weight * -math.log(ious[n] + 1e-7) + outside
        top = sorted(ious.values(), reverse=True)[:candidate_topk]
        k = min(max(int(float(torch.tensor(sum(top)).float())), 1), len(candidates))
        for n in sorted(candidates, key=lambda n: cost[g, n])[:k]:  # stable: lower index first
            taken.setdefault(n, []).append(g)
    result = [-1] * num_anchors
    for n, claimants in taken.items():
        if len(claimants) == 1:
            result[n] = claimants[0]
            continue
        best = 0
        for g in range(1, num_gt):
            if cost[g, n] < cost[best, n]:
                best = g
        result[n] = best
    return torch.tensor(result, dtype=torch.int64)
