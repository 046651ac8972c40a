"""Pieces shared by the prediction-aware rules (task-aligned, SimOTA): input checks, batched IoU,
index-ordered top-k and the "one GT per anchor" step.

Shapes: B images, M GT slots, N anchors, C classes. Pairwise tensors are [B, M, N].
"""
from __future__ import annotations

import torch
from torch import Tensor

from atss_bench.assign._common import BACKGROUND


def check_predictions(anchors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, pred_scores: Tensor,
                      pred_boxes: Tensor) -> None:
    """Shape and dtype checks of the prediction inputs (ValueError: a programming error)."""
    batch_size, num_gt = gt_boxes.shape[:2]
    num_anchors = anchors.shape[0]
    if gt_labels.shape != (batch_size, num_gt) or gt_labels.dtype != torch.int64:
        raise ValueError(f"gt_labels must be int64 [{batch_size}, {num_gt}], got "
                         f"{gt_labels.dtype} {list(gt_labels.shape)}")
    if pred_scores.dim() != 3 or pred_scores.shape[:2] != (batch_size, num_anchors):
        raise ValueError(f"pred_scores must be [{batch_size}, {num_anchors}, C], got "
                         f"{list(pred_scores.shape)}")
    if pred_boxes.shape != (batch_size, num_anchors, 4):
        raise ValueError(f"pred_boxes must be [{batch_size}, {num_anchors}, 4], got "
                         f"{list(pred_boxes.shape)}")
    if gt_labels.numel() and int(gt_labels.max()) >= pred_scores.shape[2]:
        raise ValueError(f"gt_labels reach {int(gt_labels.max())} with "
                         f"{pred_scores.shape[2]} classes")


def pairwise_iou(gt_boxes: Tensor, pred_boxes: Tensor) -> Tensor:
    """IoU of every GT with every predicted box of its image: [B, M, 4], [B, N, 4] -> [B, M, N].

    Degenerate boxes (no area) have IoU 0 with everything.
    """
    def area(boxes: Tensor) -> Tensor:
        return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * \
            (boxes[..., 3] - boxes[..., 1]).clamp(min=0)

    top_left = torch.maximum(gt_boxes[:, :, None, :2], pred_boxes[:, None, :, :2])  # [B, M, N, 2]
    bottom_right = torch.minimum(gt_boxes[:, :, None, 2:], pred_boxes[:, None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # [B, M, N]
    union = area(gt_boxes)[:, :, None] + area(pred_boxes)[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def select_topk_lowest_index(values: Tensor, k: int | Tensor, largest: bool) -> Tensor:
    """Mask of the k largest (or smallest) values of each row, ties to the lower index.

    values [..., N]; k an int or a tensor [...] of per-row counts (0 <= k <= N) -> bool [..., N]
    with exactly k True per row. Deterministic on every device (``topk`` alone picks ties
    arbitrarily).
    """
    counts = torch.as_tensor(k, device=values.device).expand(values.shape[:-1])  # [...]
    k_max = int(counts.max()) if counts.numel() else 0
    if k_max == 0:
        return torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    top = values.topk(k_max, dim=-1, largest=largest).values  # [..., k_max], sorted
    kth = top.gather(-1, (counts - 1).clamp(min=0)[..., None])  # [..., 1]
    better = values > kth if largest else values < kth
    equal = values == kth
    needed = counts[..., None] - better.sum(dim=-1, keepdim=True)
    chosen = better | (equal & (equal.cumsum(dim=-1) <= needed))
    return chosen & (counts > 0)[..., None]


def first_winner(scores: Tensor, eligible: Tensor) -> Tensor:
    """Per anchor, the eligible GT with the highest score (exact ties: lowest GT index).

    scores, eligible [B, M, N] -> int64 [B, N]: GT slot or BACKGROUND where none is eligible.
    """
    num_gt = scores.shape[1]
    masked = torch.where(eligible, scores, -torch.inf)
    best = masked.amax(dim=1, keepdim=True)  # [B, 1, N]
    is_best = eligible & (masked == best)
    slots = torch.arange(num_gt, device=scores.device)[None, :, None]
    winner = torch.where(is_best, slots, num_gt).amin(dim=1)  # [B, N]
    return torch.where(winner < num_gt, winner, BACKGROUND)
