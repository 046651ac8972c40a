"""Task-aligned assignment (TOOD, Feng et al. ICCV 2021): positives chosen by the predictions."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from atss_bench.assign._common import (
    ATSS_INSIDE_MARGIN,
    check_inputs,
    check_positive_int,
    empty_result,
)
from atss_bench.assign.predictions import (
    check_predictions,
    first_winner,
    pairwise_iou,
    select_topk_lowest_index,
)
from atss_bench.boxes import box_centers, ltrb_distances
from atss_bench.errors import ConfigError


def assign_task_aligned(
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_valid: Tensor,
    *,
    gt_labels: Tensor,
    pred_scores: Tensor,
    pred_boxes: Tensor,
    topk: int = 13,
    alpha: float = 1.0,
    beta: float = 6.0,
) -> Tensor:
    """Per GT, the anchors whose prediction is best aligned with it in class and box.

    anchors [N, 4]; gt_boxes [B, M, 4] padded, gt_valid [B, M]; gt_labels [B, M]; detached
    predictions pred_scores [B, N, C] (sigmoid) and pred_boxes [B, N, 4] (decoded). Returns
    int64 [B, N]: GT slot index or BACKGROUND (-1); this rule never ignores.

    1. u = IoU(predicted box, GT); s = predicted score of the GT's class; alignment
       t = s^alpha * u^beta for every (GT, anchor), all levels together (float64).
    2. Candidates: per GT the topk anchors with the largest t (ties: lower anchor index).
    3. Positive: a candidate with t > 0 whose anchor centre is inside the GT,
       min(l, t, r, b) > 0.01 (the official order: top-k first, then the centre test, so a GT
       may keep fewer than topk positives).
    4. An anchor positive for several GTs goes to the one with the highest u (exact ties:
       lowest GT index); everything else is BACKGROUND.

    As mmdetection's ``TaskAlignedAssigner`` (v2 and v3) except: ties in step 2 and 4 are
    broken by index on every device (mmdetection's ``topk`` / ``max`` leave them to the
    kernel); t is computed in float64; all anchors take part (mmdetection's TOOD head first drops
    anchors outside the image border, ``allowed_border=-1`` keeps them all in its configs).
    ``num_anchors_per_level`` is only checked: the top-k runs over all levels at once.
    TOOD trains with ATSS for its first epochs (``model.assign.warmup_iters``, applied by the
    detector: ``atss_bench.model.targets.Assigner``); this function is the rule after that.
    """
    check_inputs(anchors, num_anchors_per_level, gt_boxes, gt_valid)
    check_predictions(anchors, gt_boxes, gt_labels, pred_scores, pred_boxes)
    check_positive_int("topk", topk)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not value >= 0:
            raise ConfigError(f"assign: {name} must be >= 0, got {value!r}")
    batch_size, num_gt = gt_valid.shape
    num_anchors = anchors.shape[0]
    if num_anchors == 0 or num_gt == 0:
        return empty_result(batch_size, num_anchors, anchors.device)

    iou = pairwise_iou(gt_boxes.to(pred_boxes.dtype), pred_boxes)  # [B, M, N]
    labels = gt_labels.clamp(min=0)[:, None, :].expand(batch_size, num_anchors, num_gt)
    scores = pred_scores.gather(2, labels).transpose(1, 2)  # [B, M, N]
    alignment = scores.double() ** alpha * iou.double() ** beta  # [B, M, N]
    candidate = select_topk_lowest_index(alignment, min(topk, num_anchors), largest=True)

    sides = ltrb_distances(box_centers(anchors)[None, None], gt_boxes[:, :, None, :].to(anchors))
    inside = sides.amin(dim=3) > ATSS_INSIDE_MARGIN  # [B, M, N]
    positive = candidate & (alignment > 0) & inside & gt_valid[:, :, None]  # [B, M, N]
    return first_winner(iou, positive)  # [B, N]
