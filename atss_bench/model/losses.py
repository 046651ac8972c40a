"""Training losses of the dense detector (computed in float32, AMP-safe).

- ``loss_cls``: sigmoid focal loss (torchvision.ops) summed over every non-ignored anchor and
  class, divided by the number of positives.
- ``loss_reg``: GIoU (torchvision.ops.generalized_box_iou_loss on decoded boxes) or smooth L1
  (on the encoded deltas / ltrb) of the positives, times ``regression_weight``. With
  ``weight_by_centerness`` each positive's loss is weighted by its centerness target and the sum
  divided by the sum of those weights (official ATSS / FCOS); else divided by the positives.
- ``loss_centerness`` (only when the head has the branch): BCE-with-logits against the centerness
  target, summed over positives and divided by the positives, times ``centerness_weight``.

Normalisers (``normalizer``):

- ``"mean_pos"`` (official ATSS / FCOS): the number of positives averaged over processes
  (all_reduce / world size when torch.distributed is initialised), clamped at >= 1.
- ``"retinanet"`` (maskrcnn-benchmark's RetinaNet, ``rpn/retinanet/loss.py``): this process's own
  positives P, not averaged; ``loss_cls`` is divided by P + (images in this process's batch) and
  the box loss by max(1, P). With smooth L1 summed over the 4 coordinates and
  ``regression_weight`` 0.25 this is the official ``/ max(1, P * BBOX_REG_WEIGHT)``,
  BBOX_REG_WEIGHT = 4.0: the mean over positives *and* coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from atss_bench.model.coder import RegressionCoder
from atss_bench.model.targets import BatchTargets, centerness_targets


@dataclass(frozen=True)
class LossSettings:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    regression: Literal["smooth_l1", "giou"] = "giou"
    regression_weight: float = 2.0
    smooth_l1_beta: float = 1.0 / 9.0
    weight_by_centerness: bool = True
    centerness_weight: float = 1.0
    normalizer: Literal["mean_pos", "retinanet"] = "mean_pos"


def mean_over_processes(value: Tensor) -> Tensor:
    """``value`` averaged over the processes of the default group (itself when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


def loss_normalizers(normalizer: Literal["mean_pos", "retinanet"], positive: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """positive [B, N] -> (positives normaliser, classification normaliser), float32 scalars."""
    local = positive.sum().to(torch.float32)
    if normalizer == "retinanet":
        return local.clamp(min=1.0), local + positive.shape[0]
    num_pos = mean_over_processes(local).clamp(min=1.0)
    return num_pos, num_pos


def compute_losses(
    settings: LossSettings,
    coder: RegressionCoder,
    cls_logits: Tensor,
    reg_deltas: Tensor,
    centerness_logits: Tensor | None,
    anchors: Tensor,
    anchor_strides: Tensor,
    targets: BatchTargets,
) -> dict[str, Tensor]:
    """cls_logits [B, N, C], reg_deltas [B, N, 4], centerness_logits [B, N] or None,
    anchors [N, 4], anchor_strides [N] -> {"loss_cls", "loss_reg"[, "loss_centerness"]}."""
    cls_logits, reg_deltas = cls_logits.float(), reg_deltas.float()
    positive = targets.positive
    num_pos, cls_normalizer = loss_normalizers(settings.normalizer, positive)

    focal = sigmoid_focal_loss(cls_logits, targets.cls, alpha=settings.focal_alpha,
                               gamma=settings.focal_gamma, reduction="none")  # [B, N, C]
    loss_cls = (focal.sum(dim=2) * targets.valid).sum() / cls_normalizer

    image, anchor = positive.nonzero(as_tuple=True)  # [P]
    pos_anchors, pos_strides = anchors[anchor].float(), anchor_strides[anchor].float()
    pos_deltas = reg_deltas[image, anchor]  # [P, 4]
    gt_boxes = targets.boxes
    if settings.regression == "giou":
        pred_boxes = coder.decode(pos_deltas, pos_anchors, pos_strides)
        per_pos = generalized_box_iou_loss(pred_boxes, gt_boxes, reduction="none")  # [P]
    else:
        encoded = coder.encode(gt_boxes, pos_anchors, pos_strides)
        per_pos = F.smooth_l1_loss(pos_deltas, encoded, beta=settings.smooth_l1_beta,
                                   reduction="none").sum(dim=1)  # [P]

    ctr_target = centerness_targets(pos_anchors, gt_boxes)  # [P]
    if settings.weight_by_centerness:
        weight_sum = mean_over_processes(ctr_target.sum()).clamp(min=1e-6)
        loss_reg = (per_pos * ctr_target).sum() / weight_sum
    else:
        loss_reg = per_pos.sum() / num_pos
    # "+ 0 * sum" keeps every output in the graph when a batch has no positive (DDP needs it).
    losses = {
        "loss_cls": loss_cls,
        "loss_reg": settings.regression_weight * loss_reg + 0.0 * reg_deltas.sum(),
    }
    if centerness_logits is not None:
        centerness_logits = centerness_logits.float()
        bce = F.binary_cross_entropy_with_logits(centerness_logits[image, anchor], ctr_target,
                                                 reduction="sum")
        losses["loss_centerness"] = (settings.centerness_weight * bce / num_pos
                                     + 0.0 * centerness_logits.sum())
    return losses
