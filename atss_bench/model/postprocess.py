"""Inference: per-level candidates -> decoded, clipped, class-wise NMS'ed detections per image.

Per image and level: keep (anchor, class) pairs whose class probability exceeds
``score_thresh`` (the class score alone, before centerness, as the official code does; with
``threshold_on="score"`` the final score, as torchvision's FCOS does); score them
sqrt(cls x sigmoid(centerness)) when the head has a centerness branch, else cls; keep the
``pre_nms_top_n`` best. Then for the image: decode, clip to the image, class-wise
torchvision.ops.batched_nms at ``nms_thresh`` and keep the ``detections_per_img`` best.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image

from atss_bench.model.coder import RegressionCoder


@dataclass(frozen=True)
class InferenceSettings:
    score_thresh: float = 0.05
    pre_nms_top_n: int = 1000
    nms_thresh: float = 0.6
    detections_per_img: int = 100
    threshold_on: Literal["cls", "score"] = "cls"


def select_candidates(settings: InferenceSettings, cls_logits: Tensor,
                      centerness_logits: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """One image, one level: cls_logits [N, C], centerness_logits [N] or None ->
    (anchor indices [K], labels [K], scores [K]) with K <= pre_nms_top_n."""
    probs = cls_logits.float().sigmoid()  # [N, C]
    if centerness_logits is not None and settings.threshold_on == "score":
        probs = torch.sqrt(probs * centerness_logits.float().sigmoid()[:, None])  # [N, C]
        anchor, label = (probs > settings.score_thresh).nonzero(as_tuple=True)  # [K]
        scores = probs[anchor, label]
    else:
        anchor, label = (probs > settings.score_thresh).nonzero(as_tuple=True)  # [K]
        scores = probs[anchor, label]
        if centerness_logits is not None:
            scores = torch.sqrt(scores * centerness_logits.float()[anchor].sigmoid())
    if scores.numel() > settings.pre_nms_top_n:
        scores, order = scores.topk(settings.pre_nms_top_n)
        anchor, label = anchor[order], label[order]
    return anchor, label, scores


def postprocess_detections(
    settings: InferenceSettings,
    coder: RegressionCoder,
    cls_logits: list[Tensor],
    reg_deltas: list[Tensor],
    centerness_logits: list[Tensor] | None,
    anchors: list[Tensor],
    anchor_strides: list[Tensor],
    image_sizes: list[tuple[int, int]],
) -> list[dict[str, Tensor]]:
    """Per-level batched predictions ([B, N_l, C], [B, N_l, 4], [B, N_l] or None) on per-level
    anchors ([N_l, 4]) and strides ([N_l]) -> one {"boxes", "scores", "labels"} per image."""
    results = []
    for b, (height, width) in enumerate(image_sizes):
        boxes_all, scores_all, labels_all = [], [], []
        for level, level_anchors in enumerate(anchors):
            ctr = centerness_logits[level][b] if centerness_logits is not None else None
            anchor, label, scores = select_candidates(settings, cls_logits[level][b], ctr)
            boxes = coder.decode(reg_deltas[level][b, anchor].float(),
                                 level_anchors[anchor].float(), anchor_strides[level][anchor])
            boxes_all.append(boxes)
            scores_all.append(scores)
            labels_all.append(label)
        boxes = clip_boxes_to_image(torch.cat(boxes_all), (height, width))
        scores, labels = torch.cat(scores_all), torch.cat(labels_all)
        keep = batched_nms(boxes, scores, labels, settings.nms_thresh)
        keep = keep[:settings.detections_per_img]  # batched_nms sorts by decreasing score
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return results
