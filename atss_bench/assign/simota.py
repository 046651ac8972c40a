"""SimOTA (YOLOX, Ge et al. 2021): a dynamic number of cheapest anchors per GT."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from atss_bench.assign._common import (
    FCOS_INSIDE_MARGIN,
    check_inputs,
    check_per_level,
    check_positive_int,
    empty_result,
    expand_per_level,
)
from atss_bench.assign.predictions import (
    check_predictions,
    first_winner,
    pairwise_iou,
    select_topk_lowest_index,
)
from atss_bench.boxes import box_centers, ltrb_distances
from atss_bench.errors import ConfigError

# Added to the cost of an anchor outside "in the GT box and in its centre region" (mmdetection's
# INF; YOLOX's own code adds 1e6): large enough that such an anchor is taken only when a GT's k
# exceeds its in-both anchors.
OUTSIDE_COST = 1e5
IOU_EPS = 1e-7  # -log(IoU + eps) (mmdetection; YOLOX: 1e-8)
LOG_FLOOR = -100.0  # BCE's log clamp (torch.nn.functional.binary_cross_entropy)


def assign_simota(
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    *,
    gt_labels: Tensor,
    pred_scores: Tensor,
    pred_boxes: Tensor,
    strides: Sequence[int],
    center_radius: float = 2.5,
    candidate_topk: int = 10,
    iou_weight: float = 3.0,
    cls_weight: float = 1.0,
) -> Tensor:
    """Per GT, its k cheapest candidates, k from the IoUs of its predictions.

    anchors [N, 4]; gt_boxes [B, M, 4] padded, gt_valid [B, M]; gt_labels [B, M]; detached
    predictions pred_scores [B, N, C] (sigmoid) and pred_boxes [B, N, 4] (decoded); strides one
    per level. Returns int64 [B, N]: GT slot index or BACKGROUND (-1); this rule never ignores.

    1. In-box: anchor centre strictly inside the GT. In-centre: anchor centre strictly inside
       the square of half-side center_radius * (its level's stride) around the GT centre.
       Candidates: anchors in-box or in-centre for some GT of the image; others are BACKGROUND.
    2. Cost of (GT, candidate) = cls_weight * sum over classes of BCE(score, one-hot of the GT's
       class) + iou_weight * -log(IoU(predicted box, GT) + 1e-7) + 1e5 unless the anchor is
       both in-box and in-centre for that GT (float64).
    3. Dynamic k of a GT = int(sum of its candidate_topk largest IoUs over the candidates),
       at least 1.
    4. Each GT takes its k cheapest candidates (ties: lower anchor index).
    5. An anchor taken by several GTs goes to the GT of lowest cost over all GTs of its image
       (as in YOLOX and mmdetection; exact ties: lowest GT index).

    As mmdetection's ``SimOTAAssigner`` except: the BCE is on the class score itself, where
    mmdetection (and YOLOX) take sqrt(class score x objectness) - our head has no objectness;
    ties are broken by index on every device; the cost is float64. Distances are from the anchor
    centres, (x + offset) * stride with the detector's anchor offset (0.5 by default), where
    YOLOX's grid points sit at x * stride. YOLOX >= 0.3 changed step 1 to the centre region
    alone with radius 1.5; this is the paper's (and mmdetection's) version.
    ``num_anchors_per_level`` gives each anchor its level's stride.
    """
    check_inputs(anchors, num_anchors_per_level, gt_boxes, gt_valid)
    check_predictions(anchors, gt_boxes, gt_labels, pred_scores, pred_boxes)
    check_per_level("strides", strides, len(num_anchors_per_level))
    check_positive_int("candidate_topk", candidate_topk)
    for name, value in (("center_radius", center_radius), ("iou_weight", iou_weight),
                        ("cls_weight", cls_weight)):
        if not value >= 0:
            raise ConfigError(f"assign: {name} must be >= 0, got {value!r}")
    batch_size, num_gt = gt_valid.shape
    num_anchors = anchors.shape[0]
    if num_anchors == 0 or num_gt == 0:
        return empty_result(batch_size, num_anchors, anchors.device)

    in_either, in_both = _geometry(anchors, num_anchors_per_level, gt_boxes, gt_valid, strides,
                                   center_radius)  # [B, M, N] each
    candidate = in_either.any(dim=1)  # [B, N]
    iou = pairwise_iou(gt_boxes.to(pred_boxes.dtype), pred_boxes).double()  # [B, M, N]
    cost = (cls_weight * _classification_cost(pred_scores, gt_labels)
            + iou_weight * -torch.log(iou + IOU_EPS)
            + OUTSIDE_COST * (~in_both).double())  # [B, M, N]
    usable = candidate[:, None, :] & gt_valid[:, :, None]  # [B, M, N]
    cost = torch.where(usable, cost, torch.inf)

    candidate_iou = torch.where(usable, iou, 0.0)
    top_iou = candidate_iou.topk(min(candidate_topk, num_anchors), dim=2).values  # [B, M, k]
    dynamic_k = top_iou.sum(dim=2).float().int().clamp(min=1).long()  # [B, M]
    dynamic_k = torch.minimum(dynamic_k, usable.sum(dim=2))  # 0 for a padded slot
    taken = select_topk_lowest_index(cost, dynamic_k, largest=False)  # [B, M, N]

    claims = taken.sum(dim=1)  # [B, N]
    single = first_winner(taken.double(), taken)  # the only claimant
    cheapest = first_winner(-cost, usable)  # over all GTs of the image
    return torch.where(claims > 1, cheapest, single)  # [B, N]


def _geometry(anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor,
              gt_valid: Tensor, strides: Sequence[int], center_radius: float
              ) -> tuple[Tensor, Tensor]:
    """(in-box or in-centre, in-box and in-centre), both [B, M, N], False on padded slots."""
    centers = box_centers(anchors)[None, None]  # [1, 1, N, 2]
    boxes = gt_boxes[:, :, None, :].to(anchors)  # [B, M, 1, 4]
    in_box = ltrb_distances(centers, boxes).amin(dim=3) > FCOS_INSIDE_MARGIN  # [B, M, N]
    radius = center_radius * expand_per_level(strides, num_anchors_per_level, anchors)  # [N]
    gt_centers = box_centers(boxes)  # [B, M, 1, 2]
    region = torch.cat([gt_centers - radius[:, None], gt_centers + radius[:, None]], dim=-1)
    in_center = ltrb_distances(centers, region).amin(dim=3) > FCOS_INSIDE_MARGIN  # [B, M, N]
    valid = gt_valid[:, :, None]
    return (in_box | in_center) & valid, in_box & in_center & valid


def _classification_cost(pred_scores: Tensor, gt_labels: Tensor) -> Tensor:
    """sum_c BCE(p_c, [c == label]) for every (GT, anchor): [B, N, C], [B, M] -> [B, M, N]."""
    scores = pred_scores.double()
    log_p = torch.log(scores).clamp(min=LOG_FLOOR)  # [B, N, C]
    log_not_p = torch.log1p(-scores).clamp(min=LOG_FLOOR)
    all_negative = -log_not_p.sum(dim=2)  # [B, N]: every class a negative
    index = gt_labels.clamp(min=0)[:, None, :].expand(-1, scores.shape[1], -1)  # [B, N, M]
    own_p = log_p.gather(2, index).transpose(1, 2)  # [B, M, N]
    own_not_p = log_not_p.gather(2, index).transpose(1, 2)
    return all_negative[:, None, :] + own_not_p - own_p
