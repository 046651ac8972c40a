"""Test-time augmentation: the test passes of an image and how their detections are merged.

The official ATSS test for Table 8's multi-scale rows (sfzhang15/ATSS,
``atss_core/engine/bbox_aug_vote.py``, ``TEST.BBOX_AUG`` with ``VOTE: True``), per image:

1. detect at ``MIN_SIZE_TEST`` 800 / ``MAX_SIZE_TEST`` 1333, every box kept;
2. detect at each of ``SCALES`` (400 .. 1800), the longer side capped at ``MAX_SIZE`` 3000 (at
   1333 for scales below 800), keeping only the boxes with ``lo^2 < area < hi^2`` in that
   scale's pixels, ``(lo, hi)`` the scale's entry of ``SCALE_RANGES``;
3. the same on the horizontally flipped image (``H_FLIP``, ``SCALE_H_FLIP``), boxes mirrored back;
4. pool every pass (each one the detector's own output: its NMS and top 100), and per class
   soft box voting at ``VOTE_TH`` 0.66 (``MERGE_TYPE: soft-vote``, :func:`vote_boxes`);
5. keep the ``MODEL.ATSS.PRE_NMS_TOP_N`` (1000) best.

Here: the scales are ``data.test_min_size`` then ``data.test_extra_sizes``; ``model.test.aug``
holds flip, the cap, the ranges, the merge and the number kept (``config.TestAugConfig``).
Coordinates are continuous (torchvision's; a box over pixels 0..9 is [0, 10]), where the official
code counts pixels (+1): it measures IoU and area as (x1 - x0 + 1) x (y1 - y0 + 1) and mirrors x
to W - x - 1. So a mirrored box here lands 1 px (resized) right of the official one, and the
IoU / area tests differ by a pixel's width at the box border.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_area, box_iou

from atss_bench.config import DataConfig, TestAugConfig, TestConfig
from atss_bench.engine.loaders import test_sizes

Detections = dict[str, Tensor]  # boxes [N, 4] xyxy, scores [N], labels [N]
Merge = Literal["nms", "vote", "soft_vote"]


@dataclass(frozen=True)
class EvalScale:
    """One test scale: shorter side, longer-side cap, and the sqrt-area range its boxes must lie
    in (exclusive, in this scale's resized pixels; None: every box)."""

    min_size: int
    max_size: int
    area_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class MergeSettings:
    merge: Merge = "nms"
    nms_thresh: float = 0.6
    vote_thresh: float = 0.66
    # soft voting keeps a group member at score x (1 - IoU with the group's best) >= this
    soft_score_thresh: float = 0.05
    detections_per_img: int = 100


def build_test_scales(data: DataConfig, aug: TestAugConfig) -> list[EvalScale]:
    """The scales of ``engine.loaders.test_sizes`` (test_min_size first, then the distinct extra
    sizes, each with a cap that grows with it) with ``aug``'s cap and size ranges applied. The
    base scale has neither: the official identity pass keeps every box at ``data.max_size``."""
    base_sizes = test_sizes(data)
    ranges = dict(zip(data.test_extra_sizes, aug.scale_ranges))
    scales = [EvalScale(*base_sizes[0])]
    for size, cap in base_sizes[1:]:
        if aug.max_size is not None:
            cap = aug.max_size if size >= data.test_min_size else data.max_size
        scales.append(EvalScale(size, cap, ranges.get(size)))
    return scales


def build_merge_settings(test: TestConfig) -> MergeSettings:
    aug = test.aug
    kept = aug.detections_per_img if aug.detections_per_img is not None else test.detections_per_img
    return MergeSettings(aug.merge, test.nms_thresh, aug.vote_thresh, test.score_thresh, kept)


def unflip_boxes(boxes: Tensor, width: int) -> Tensor:
    """Boxes [N, 4] found on a horizontally flipped image of ``width`` -> the unflipped image:
    x -> width - x (x0 and x1 swap roles)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([width - x1, y0, width - x0, y1], dim=-1)


def filter_by_area(dets: Detections, area_range: tuple[float, float]) -> Detections:
    """Keep the detections with ``lo^2 < w * h < hi^2`` (both strict, as the official code)."""
    lo, hi = area_range
    area = box_area(dets["boxes"])  # [N]
    keep = (area > lo * lo) & (area < hi * hi)
    return {key: value[keep] for key, value in dets.items()}


def vote_boxes(boxes: Tensor, scores: Tensor, labels: Tensor, vote_thresh: float,
               soft_score_thresh: float | None = None) -> Detections:
    """Class-wise box voting, greedy by score (the official ``bbox_vote`` / ``soft_bbox_vote``).

    1. Take the best remaining detection (the seed) of any class; its group is every remaining
       detection of its class with IoU >= ``vote_thresh`` with it, the seed included. The group
       leaves the pool.
    2. A group of one is output as it is. Otherwise output one box, the score-weighted mean of
       the group's boxes, with the seed's score.
    3. Soft voting (``soft_score_thresh`` given): also output every other group member with its
       score x (1 - IoU with the seed), unless that falls below ``soft_score_thresh``. The
       official code does the same to the seed itself (score x 0) and drops it by its threshold.
    4. Repeat until the pool is empty; the output is sorted by decreasing score.
    """
    order = scores.argsort(descending=True, stable=True)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    iou = box_iou(boxes, boxes)  # [N, N]
    votes = (iou >= vote_thresh) & (labels[:, None] == labels[None, :])  # [N, N]
    remaining = torch.ones(len(scores), dtype=torch.bool, device=scores.device)
    out_boxes, out_scores, out_labels = [], [], []
    for seed in range(len(scores)):
        if not remaining[seed]:
            continue
        group = remaining & votes[seed]
        group[seed] = True  # a zero-area seed has IoU NaN with itself
        remaining &= ~group
        others = group.nonzero()[:, 0]
        others = others[others != seed]
        voted = boxes[seed]
        if len(others):
            members = torch.cat([others.new_tensor([seed]), others])
            weights = scores[members]
            voted = (boxes[members] * weights[:, None]).sum(0) / weights.sum()
        out_boxes.append(voted[None])
        out_scores.append(scores[seed, None])
        out_labels.append(labels[seed, None])
        if soft_score_thresh is not None and len(others):
            soft = scores[others] * (1.0 - iou[seed, others])
            kept = others[soft >= soft_score_thresh]
            out_boxes.append(boxes[kept])
            out_scores.append(soft[soft >= soft_score_thresh])
            out_labels.append(labels[kept])
    if not out_scores:
        return {"boxes": boxes, "scores": scores, "labels": labels}
    result_scores = torch.cat(out_scores)
    final = result_scores.argsort(descending=True, stable=True)
    return {"boxes": torch.cat(out_boxes)[final], "scores": result_scores[final],
            "labels": torch.cat(out_labels)[final]}


def merge_detections(per_pass: list[Detections], settings: MergeSettings) -> Detections:
    """Pool one image's detections from every test pass (same coordinates), merge them per
    class (``settings.merge``) and keep the ``detections_per_img`` best. One pass with the NMS
    merge is returned as it is (the detector's own output)."""
    if len(per_pass) == 1 and settings.merge == "nms":
        return per_pass[0]
    boxes = torch.cat([d["boxes"] for d in per_pass])
    scores = torch.cat([d["scores"] for d in per_pass])
    labels = torch.cat([d["labels"] for d in per_pass])
    if settings.merge == "nms":
        keep = batched_nms(boxes, scores, labels, settings.nms_thresh)  # sorted by score
        merged = {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
    else:
        soft = settings.soft_score_thresh if settings.merge == "soft_vote" else None
        merged = vote_boxes(boxes, scores, labels, settings.vote_thresh, soft)
    return {key: value[: settings.detections_per_img] for key, value in merged.items()}
