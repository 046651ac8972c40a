"""Training targets: pad the GTs, run the sample-selection rule, gather per-anchor targets."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from atss_bench.assign import IGNORE, assign_batched, get_assigner
from atss_bench.boxes import box_centers, ltrb_distances


@dataclass(frozen=True)
class Assigner:
    """A sample-selection rule with its params bound: an ``atss_bench.assign`` strategy + kwargs."""

    strategy: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_assigner(self.strategy, self.params)  # ConfigError now, not at the first step
        object.__setattr__(self, "params", dict(self.params))  # own copy (and picklable)

    def __call__(self, anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor,
                 gt_valid: Tensor) -> Tensor:
        """anchors [N, 4], gt_boxes [B, M, 4] padded, gt_valid [B, M] -> int64 [B, N]."""
        return assign_batched(self.strategy, anchors, num_anchors_per_level, gt_boxes, gt_valid,
                              **self.params)


@dataclass
class BatchTargets:
    """Per-anchor targets of a batch (N anchors, B images, C classes).

    matched [B, N]: GT slot (>= 0), BACKGROUND (-1) or IGNORE (-2); ``cls`` [B, N, C] one-hot of
    the positives' classes; ``positive`` [B, N] and ``valid`` [B, N] (= not ignored) masks;
    ``boxes`` [P, 4] the matched GT box of each positive, in ``positive.nonzero()`` order.
    """

    matched: Tensor
    cls: Tensor
    positive: Tensor
    valid: Tensor
    boxes: Tensor


def pad_targets(targets: Sequence[Mapping[str, Tensor]], device: torch.device
                ) -> tuple[Tensor, Tensor, Tensor]:
    """List of {"boxes": [K, 4], "labels": [K]} -> boxes [B, M, 4], labels [B, M], valid [B, M]."""
    batch_size = len(targets)
    max_gt = max((len(t["boxes"]) for t in targets), default=0)
    boxes = torch.zeros((batch_size, max_gt, 4), dtype=torch.float32, device=device)
    labels = torch.zeros((batch_size, max_gt), dtype=torch.int64, device=device)
    valid = torch.zeros((batch_size, max_gt), dtype=torch.bool, device=device)
    for b, target in enumerate(targets):
        k = len(target["boxes"])
        boxes[b, :k] = target["boxes"].to(device=device, dtype=torch.float32).reshape(k, 4)
        labels[b, :k] = target["labels"].to(device=device, dtype=torch.int64)
        valid[b, :k] = True
    return boxes, labels, valid


def build_targets(assigner: Assigner, anchors: Tensor, num_anchors_per_level: Sequence[int],
                  targets: Sequence[Mapping[str, Tensor]], num_classes: int) -> BatchTargets:
    """Assign every anchor of every image and gather what the losses need."""
    gt_boxes, gt_labels, gt_valid = pad_targets(targets, anchors.device)
    matched = assigner(anchors, num_anchors_per_level, gt_boxes, gt_valid)  # [B, N]
    positive = matched >= 0
    slot = matched.clamp(min=0)  # [B, N]
    labels = torch.gather(gt_labels, 1, slot) if gt_labels.shape[1] else slot  # [B, N]
    cls = torch.zeros((*matched.shape, num_classes), dtype=torch.float32, device=anchors.device)
    cls.scatter_(2, labels[..., None], positive[..., None].to(cls.dtype))  # [B, N, C]
    image, anchor = positive.nonzero(as_tuple=True)  # [P]
    boxes = gt_boxes[image, matched[image, anchor]]  # [P, 4]
    return BatchTargets(matched, cls, positive, matched != IGNORE, boxes)


def centerness_targets(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS centerness of each anchor centre w.r.t. its GT: [P, 4], [P, 4] -> [P] in [0, 1].

    sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)); a centre outside its GT (possible
    without the in-GT-box rule) gets 0.
    """
    ltrb = ltrb_distances(box_centers(anchors), gt_boxes).clamp(min=0)  # [P, 4]
    left_right, top_bottom = ltrb[:, 0::2], ltrb[:, 1::2]
    ratio_x = left_right.min(dim=1).values / left_right.max(dim=1).values.clamp(min=1e-6)
    ratio_y = top_bottom.min(dim=1).values / top_bottom.max(dim=1).values.clamp(min=1e-6)
    return torch.sqrt(ratio_x * ratio_y)
