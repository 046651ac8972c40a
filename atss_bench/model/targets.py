"""Training targets: pad the GTs, run the sample-selection rule, gather per-anchor targets."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from atss_bench.assign import IGNORE, get_assigner, rule_inputs, run_assigner
from atss_bench.boxes import box_centers, ltrb_distances


@dataclass(frozen=True)
class Assigner:
    """A sample-selection rule with its params bound: an ``atss_bench.assign`` strategy + kwargs.

    ``inputs``: the prediction inputs the rule asks for (``atss_bench.assign.PREDICTION_INPUTS``);
    the detector computes and passes only those. ``warmup``: the rule used instead for the first
    ``warmup_iters`` training steps (TOOD's ATSS warm-up, while predictions are still noise).
    """

    strategy: str
    params: Mapping[str, Any] = field(default_factory=dict)
    warmup: "Assigner | None" = None
    warmup_iters: int = 0

    def __post_init__(self) -> None:
        # ConfigError now, not at the first step; plug-ins are imported once, here.
        object.__setattr__(self, "_fn", get_assigner(self.strategy, self.params))
        object.__setattr__(self, "params", dict(self.params))  # own copy
        if self.warmup_iters and self.warmup is None:
            raise ValueError("warmup_iters needs a warmup rule")

    @property
    def inputs(self) -> tuple[str, ...]:
        return rule_inputs(self._fn)  # type: ignore[attr-defined]

    def at_step(self, step: int) -> "Assigner":
        """The rule in force at training step ``step`` (0-based)."""
        if self.warmup is not None and step < self.warmup_iters:
            return self.warmup
        return self

    def __call__(self, anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor,
                 gt_valid: Tensor, **inputs: Tensor) -> Tensor:
        """anchors [N, 4], gt_boxes [B, M, 4] padded, gt_valid [B, M] -> int64 [B, N].

        ``inputs``: batched prediction inputs (gt_labels [B, M], pred_scores [B, N, C],
        pred_boxes [B, N, 4]); those the rule does not ask for are dropped.
        """
        wanted = {name: inputs[name] for name in self.inputs if name in inputs}
        if len(wanted) != len(self.inputs):
            missing = sorted(set(self.inputs) - set(wanted))
            raise ValueError(f"assign strategy {self.strategy!r} needs {', '.join(missing)}")
        return run_assigner(self._fn, anchors, num_anchors_per_level,  # type: ignore[attr-defined]
                            gt_boxes, gt_valid, self.params, wanted)

    def __getstate__(self) -> dict[str, Any]:
        # Picklable: the function is found again from its name (plug-ins re-imported).
        return {"strategy": self.strategy, "params": self.params, "warmup": self.warmup,
                "warmup_iters": self.warmup_iters}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        self.__post_init__()


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
                  targets: Sequence[Mapping[str, Tensor]], num_classes: int,
                  predictions: Mapping[str, Tensor] | None = None) -> BatchTargets:
    """Assign every anchor of every image and gather what the losses need.

    ``predictions``: detached pred_scores [B, N, C] / pred_boxes [B, N, 4] for a rule that asks
    for them (``assigner.inputs``); gt_labels come from ``targets``.
    """
    gt_boxes, gt_labels, gt_valid = pad_targets(targets, anchors.device)
    inputs = {**(predictions or {}), "gt_labels": gt_labels}
    matched = assigner(anchors, num_anchors_per_level, gt_boxes, gt_valid, **inputs)  # [B, N]
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
