"""Sample selection: which GT (if any) each anchor learns from.

    assign(strategy, anchors, num_anchors_per_level, gt_boxes, **params) -> int64 [N]

Label space: index of the matched GT (>= 0), BACKGROUND (-1) or IGNORE (-2, only the IoU rule
produces it). anchors [N, 4] and gt_boxes [M, 4] are (x0, y0, x1, y1); anchors are ordered level
by level, location-major (``atss_bench.boxes.generate_anchors``). Strategies and their params are
the keyword arguments of the functions in ``ASSIGNERS``. Those functions take a padded batch
(gt_boxes [B, M, 4], gt_valid [B, M]) and return [B, N]; ``assign`` calls one with a batch of one
image, ``assign_batched`` with a whole batch. The prediction-aware rules (task_aligned,
simota) and plug-ins that ask for them also receive gt_labels, pred_scores and pred_boxes
(``PREDICTION_INPUTS``). Every rule is deterministic: ties are broken by
the lower anchor or GT index, identically on CPU and CUDA.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from atss_bench.assign._common import BACKGROUND, IGNORE
from atss_bench.assign.atss import assign_atss
from atss_bench.assign.batched import assign_batched, run_assigner, select_inputs
from atss_bench.assign.fcos import assign_fcos
from atss_bench.assign.max_iou import assign_max_iou
from atss_bench.assign.plugins import PREDICTION_INPUTS
from atss_bench.assign.simota import assign_simota
from atss_bench.assign.table import ASSIGNERS, get_assigner, rule_inputs
from atss_bench.assign.tood import assign_task_aligned
from atss_bench.assign.topk_scale import assign_topk_scale

__all__ = [
    "ASSIGNERS", "BACKGROUND", "IGNORE", "PREDICTION_INPUTS", "assign", "assign_atss",
    "assign_batched", "assign_fcos", "assign_max_iou", "assign_simota", "assign_task_aligned",
    "assign_topk_scale", "get_assigner", "rule_inputs", "run_assigner",
]


def assign(
    strategy: str,
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    **params: Any,
) -> Tensor:
    """Assign one image: anchors [N, 4], gt_boxes [M, 4] -> int64 [N] (GT index, -1 or -2).

    A prediction-aware strategy also takes gt_labels [M], pred_scores [N, C] and pred_boxes
    [N, 4] among ``params`` (inputs it does not name are dropped). ``strategy`` outside
    ``ASSIGNERS`` is a plug-in (``atss_bench.assign.plugins``). Raises ConfigError for an
    unknown strategy or param (named in the message).
    """
    params = dict(params)
    given = {name: params.pop(name) for name in PREDICTION_INPUTS if name in params}
    assigner = get_assigner(strategy, params)
    if gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be [M, 4], got {list(gt_boxes.shape)}")
    inputs = {name: value[None] for name, value in select_inputs(strategy, assigner, given).items()}
    gt_valid = torch.ones((1, gt_boxes.shape[0]), dtype=torch.bool, device=gt_boxes.device)
    return assigner(anchors, num_anchors_per_level, gt_boxes[None], gt_valid, **inputs,
                    **params)[0]
