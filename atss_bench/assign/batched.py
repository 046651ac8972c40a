"""The batched path: one call for all images of a training batch.

Every rule works on padded GT lists [B, M, 4] (see ``_common``), so a batch can go through a
rule in one padded call. Measured on CPU (benchmarks/bench_assign.py) a loop of per-image calls
is faster: padding inflates the work and the big [B * M, N] tensors fall out of cache. On CUDA
the padded call saves the per-image kernel launches, so it is used there (in chunks of images,
to bound memory).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from atss_bench.assign._common import check_inputs, empty_result
from atss_bench.assign.plugins import PREDICTION_INPUTS
from atss_bench.assign.table import AssignFn, get_assigner, rule_inputs

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
    A prediction-aware rule also gets its inputs among ``params``, batched: gt_labels [B, M],
    pred_scores [B, N, C], pred_boxes [B, N, 4] (those it does not ask for are dropped).
    """
    params = dict(params)
    given = {name: params.pop(name) for name in PREDICTION_INPUTS if name in params}
    assigner = get_assigner(strategy, params)
    return run_assigner(assigner, anchors, num_anchors_per_level, gt_boxes, gt_valid, params,
                        select_inputs(strategy, assigner, given))


def select_inputs(strategy: str, assigner: AssignFn, given: Mapping[str, Tensor]
                  ) -> dict[str, Tensor]:
    """The prediction inputs ``assigner`` asks for, from ``given`` (ValueError: one missing)."""
    wanted = rule_inputs(assigner)
    missing = [name for name in wanted if name not in given]
    if missing:
        raise ValueError(f"assign strategy {strategy!r} needs {', '.join(missing)}")
    return {name: given[name] for name in wanted}


def run_assigner(
    assigner: AssignFn,
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    params: Mapping[str, Any],
    inputs: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """``assign_batched`` for a rule already checked by ``get_assigner``. -> [B, N]"""
    check_inputs(anchors, num_anchors_per_level, gt_boxes, gt_valid)
    run = run_padded if anchors.device.type in PADDED_DEVICES else run_per_image
    return run(assigner, anchors, num_anchors_per_level, gt_boxes, gt_valid, dict(params),
               dict(inputs or {}))


def run_per_image(
    assigner: AssignFn,
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    params: dict[str, Any],
    inputs: dict[str, Tensor] | None = None,
) -> Tensor:
    """One call per image on its valid GTs only; GT indices mapped back to slots. -> [B, N]"""
    inputs = inputs or {}
    rows = []
    for b, (boxes, valid) in enumerate(zip(gt_boxes, gt_valid)):
        slots = valid.nonzero()[:, 0]  # [M_b]
        ones = torch.ones((1, len(slots)), dtype=torch.bool, device=valid.device)
        image_inputs = {name: (value[b][slots] if name == "gt_labels" else value[b])[None]
                        for name, value in inputs.items()}
        matched = assigner(anchors, num_anchors_per_level, boxes[slots][None], ones,
                           **image_inputs, **params)[0]
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
    inputs: dict[str, Tensor] | None = None,
) -> Tensor:
    """Padded calls over chunks of images, trailing all-invalid slots trimmed. -> [B, N]"""
    inputs = inputs or {}
    batch_size, num_anchors = gt_boxes.shape[0], anchors.shape[0]
    used_slots = gt_valid.any(dim=0).nonzero()  # [S, 1] slots valid in some image
    num_slots = int(used_slots.max()) + 1 if used_slots.numel() else 0
    if num_slots == 0 or num_anchors == 0:
        return empty_result(batch_size, num_anchors, anchors.device)
    gt_boxes, gt_valid = gt_boxes[:, :num_slots], gt_valid[:, :num_slots]
    if "gt_labels" in inputs:
        inputs = {**inputs, "gt_labels": inputs["gt_labels"][:, :num_slots]}
    images_per_call = max(1, MAX_PAIRS_PER_CALL // (num_anchors * num_slots))
    results = []
    for start in range(0, batch_size, images_per_call):
        chunk = slice(start, start + images_per_call)
        results.append(assigner(
            anchors, num_anchors_per_level, gt_boxes[chunk], gt_valid[chunk],
            **{name: value[chunk] for name, value in inputs.items()}, **params,
        ))
    return torch.cat(results, dim=0)  # [B, N]
