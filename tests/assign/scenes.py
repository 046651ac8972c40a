"""Small random scenes with predictions for the prediction-aware rules' tests."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from atss_bench.boxes import generate_anchors
from tests.assign.reference import STRIDES

IMAGE_SIZE = (160, 224)
NUM_CLASSES = 6


def prediction_scene(seed: int, num_gt: int | None = None
                     ) -> tuple[Tensor, list[int], Tensor, Tensor, Tensor, Tensor]:
    """anchors, num_anchors_per_level, gt_boxes [M, 4], gt_labels [M], pred_scores [N, C],
    pred_boxes [N, 4]: integer GT corners, predictions near the GTs half of the time."""
    generator = torch.Generator().manual_seed(seed)
    height, width = IMAGE_SIZE
    sizes = [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]
    levels = generate_anchors(sizes, STRIDES, 8.0, 1, (1.0,))
    anchors, napl = torch.cat(levels), [len(a) for a in levels]
    num_gt = num_gt if num_gt is not None else int(torch.randint(1, 6, (1,), generator=generator))
    wh = (8 + torch.rand(num_gt, 2, generator=generator) * 120).round()
    xy = (torch.rand(num_gt, 2, generator=generator)
          * (torch.tensor([width, height]) - wh)).floor()
    gt_boxes = torch.cat([xy, xy + wh], dim=1)
    gt_labels = torch.randint(NUM_CLASSES, (num_gt,), generator=generator)
    num_anchors = anchors.shape[0]
    scores = torch.rand(num_anchors, NUM_CLASSES, generator=generator)
    base = anchors.clone()
    centres = (anchors[:, None, :2] + anchors[:, None, 2:]) / 2  # [N, 1, 2]
    inside = ((centres > gt_boxes[None, :, :2]) & (centres < gt_boxes[None, :, 2:])).all(2)
    owner = torch.where(inside, torch.arange(num_gt), num_gt).amin(dim=1)  # [N], first GT
    near = (owner < num_gt) & (torch.rand(num_anchors, generator=generator) < 0.8)
    base[near] = gt_boxes[owner[near]]
    jitter = (torch.rand(num_anchors, 4, generator=generator) - 0.5) * 0.5
    boxes = base + jitter * (base[:, 2:] - base[:, :2]).repeat(1, 2)
    boxes = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]),
                       torch.maximum(boxes[:, :2], boxes[:, 2:])], dim=1)
    return anchors, napl, gt_boxes, gt_labels, scores, boxes
