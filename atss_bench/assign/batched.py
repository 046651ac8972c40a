"""The batched path: one call for all images of a training batch.

Every rule works on padded GT lists [B, M, 4] (see ``_common``), so a batch can go through a
rule in one padded call. Measured on CPU (benchmarks/bench_assign.py) a loop of per-image calls
is faster: padding inflates the work and the big [B * M, N] tensors fall out of cache. On CUDA
the padded call saves the per-image kernel launches, so it is used there (in chunks of images,
to bound memory).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from atss_bench.assign._common import check_inputs, empty_result
from atss_bench.assign.table import AssignFn, get_assigner

# Devices on which assign_batched makes one padded call instead of a loop over images.
PADDED_DEVICES = ("cuda",)
# Most (GT slot, anchor) pairs in one padded call: the rules keep a few [B * M, N] tensors
# (box_iou, a few times that). A single image is never split.
MAX_PAIRS_PER_CALL = 2**26


def assign_batched(
    strategy: str,
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    **params: Any,
) -> Tensor:
    """Assign every image of a batch: anchors [N, 4], gt_boxes [B, M, 4] padded, gt_valid [B, M].

    Returns int64 [B, N]: row b is ``assign(strategy, anchors, num_anchors_per_level,
    gt_boxes[b][gt_valid[b]], **params)`` with each GT index turned into its slot in gt_boxes[b]
    (the same numbers when the valid slots come first). Invalid slots are never matched.
    """
    assigner = get_assigner(strategy, params)
    check_inputs(anchors, num_anchors_per_level, gt_boxes, gt_valid)
    if anchors.device.type in PADDED_DEVICES:
        return run_padded(assigner, anchors, num_anchors_per_level, gt_boxes, gt_valid, params)
    return run_per_image(assigner, anchors, num_anchors_per_level, gt_boxes, gt_valid, params)


def run_per_image(
    assigner: AssignFn,
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    params: dict[str, Any],
) -> Tensor:
    """One call per image on its valid GTs only; GT indices mapped back to slots. -> [B, N]"""
    rows = []
    for boxes, valid in zip(gt_boxes, gt_valid):
        slots = valid.nonzero()[:, 0]  # [M_b]
        ones = torch.ones((1, len(slots)), dtype=torch.bool, device=valid.device)
        matched = assigner(anchors, num_anchors_per_level, boxes[slots][None], ones, **params)[0]
        if len(slots):
            matched = torch.where(matched >= 0, slots[matched.clamp(min=0)], matched)  # [N]
        rows.append(matched)
    if not rows:
        return empty_result(0, anchors.shape[0], anchors.device)
    return torch.stack(rows)  # [B, N]


def run_padded(
    assigner: AssignFn,
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    params: dict[str, Any],
) -> Tensor:
    """Padded calls over chunks of images, trailing all-invalid slots trimmed. -> [B, N]"""
    batch_size, num_anchors = gt_boxes.shape[0], anchors.shape[0]
    used_slots = gt_valid.any(dim=0).nonzero()  # [S, 1] slots valid in some image
    num_slots = int(used_slots.max()) + 1 if used_slots.numel() else 0
    if num_slots == 0 or num_anchors == 0:
        return empty_result(batch_size, num_anchors, anchors.device)
    gt_boxes, gt_valid = gt_boxes[:, :num_slots], gt_valid[:, :num_slots]
    images_per_call = max(1, MAX_PAIRS_PER_CALL // (num_anchors * num_slots))
    results = [
        assigner(
            anchors, num_anchors_per_level,
            gt_boxes[start:start + images_per_call], gt_valid[start:start + images_per_call],
            **params,
        )
        for start in range(0, batch_size, images_per_call)
    ]
    return torch.cat(results, dim=0)  # [B, N]
