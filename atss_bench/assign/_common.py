"""Pieces shared by the sample-selection rules: label space, parameter checks, candidates, claims.

Every rule works on a batch of padded GT lists: ``gt_boxes`` [B, M, 4] and ``gt_valid`` [B, M]
(one image is a batch of one). Internally the B * M GT slots are flattened into C = B * M rows
(GT-major: tensors are [C, N] or [C, K]); everything per GT (candidates, thresholds) is computed
row by row, and only the final "which GT wins this anchor" step looks at one image's rows together.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from atss_bench.errors import ConfigError

BACKGROUND = -1  # negative sample
IGNORE = -2  # neither positive nor negative (no loss)

# Official ATSS code tests "centre inside the GT" as min(l, t, r, b) > 0.01 (ATSS and IoU rules);
# official FCOS tests min(l, t, r, b) > 0 (FCOS and top-k + scale rules).
ATSS_INSIDE_MARGIN = 0.01
FCOS_INSIDE_MARGIN = 0.0


def check_inputs(
    anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor, gt_valid: Tensor
) -> None:
    """Shape checks (a mismatch is a programming error: ValueError, not ConfigError)."""
    if anchors.dim() != 2 or anchors.shape[1] != 4:
        raise ValueError(f"anchors must be [N, 4], got {list(anchors.shape)}")
    if gt_boxes.dim() != 3 or gt_boxes.shape[2] != 4:
        raise ValueError(f"gt_boxes must be [B, M, 4], got {list(gt_boxes.shape)}")
    if gt_valid.shape != gt_boxes.shape[:2] or gt_valid.dtype != torch.bool:
        raise ValueError(f"gt_valid must be a bool [B, M] tensor, got {list(gt_valid.shape)}")
    if any(n < 0 for n in num_anchors_per_level) or sum(num_anchors_per_level) != anchors.shape[0]:
        raise ValueError(
            f"num_anchors_per_level {list(num_anchors_per_level)} does not sum to "
            f"{anchors.shape[0]} anchors"
        )


def check_per_level(name: str, values: Sequence, num_levels: int) -> None:
    if len(values) != num_levels:
        raise ConfigError(f"assign: {name} has {len(values)} entries for {num_levels} levels")


def check_scale_ranges(scale_ranges: Sequence[Sequence[float]], num_levels: int) -> None:
    check_per_level("scale_ranges", scale_ranges, num_levels)
    for lo_hi in scale_ranges:
        if len(lo_hi) != 2 or not lo_hi[0] <= lo_hi[1]:
            raise ConfigError(f"assign: scale range {tuple(lo_hi)} is not (lo, hi) with lo <= hi")


def check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"assign: {name} must be an integer >= 1, got {value!r}")


def expand_per_level(
    values: Sequence[float], num_anchors_per_level: Sequence[int], like: Tensor
) -> Tensor:
    """One value per level -> one per anchor: [num_levels] -> [N]."""
    per_level = torch.tensor([float(v) for v in values], dtype=like.dtype, device=like.device)
    counts = torch.tensor(list(num_anchors_per_level), device=like.device)
    return per_level.repeat_interleave(counts, output_size=sum(num_anchors_per_level))


def empty_result(batch_size: int, num_anchors: int, device: torch.device) -> Tensor:
    return torch.full((batch_size, num_anchors), BACKGROUND, dtype=torch.int64, device=device)


def count_anchors_per_location(anchor_centers: Tensor, num_anchors_per_level: Sequence[int]) -> int:
    """A when anchors come in runs of A with bit-identical centres (all anchors of a location
    adjacent, every level a multiple of A), else 1. Rules use it to work on locations, not anchors.
    """
    if anchor_centers.shape[0] == 0:
        return 1
    head = anchor_centers[:64]
    differs = (head != head[0]).any(dim=1).tolist()
    run = differs.index(True) if True in differs else len(differs)
    if run == 1 or any(n % run for n in num_anchors_per_level):
        return 1
    grouped = anchor_centers.reshape(-1, run, 2)  # [L, A, 2]
    return run if bool((grouped == grouped[:, :1]).all()) else 1


def select_closest_per_level(
    points: Tensor,
    gt_centers: Tensor,
    num_points_per_level: Sequence[int],
    k: int,
) -> Tensor:
    """Per GT and level, the min(k, N_l) points closest (L2) to the GT centre.

    Ranked by (squared distance, point index): ties go to the lower index, so the answer is
    deterministic on every device (``topk`` alone picks arbitrary ties, which matters: GT centres
    often lie half-way between two locations). Squared distances are ranked in float32.

    points [P, 2], gt_centers [C, 2] -> indices [C, K], K = sum over levels of min(k, N_l).
    """
    candidates = []
    start = 0
    for num in num_points_per_level:
        kl = min(k, num)
        if kl > 0:
            level_points = points[start:start + num].float()  # [N_l, 2]
            dx = gt_centers[:, None, 0].float() - level_points[None, :, 0]  # [C, N_l]
            dy = gt_centers[:, None, 1].float() - level_points[None, :, 1]
            dist2 = dx * dx + dy * dy  # [C, N_l], >= +0 so its int32 bits sort like it
            index = torch.arange(num, device=points.device)
            key = (dist2.view(torch.int32).to(torch.int64) << 32) | index  # unique per column
            candidates.append(key.topk(kl, dim=1, largest=False).indices + start)  # [C, kl]
        start += num
    if not candidates:
        return torch.zeros((gt_centers.shape[0], 0), dtype=torch.int64, device=points.device)
    return torch.cat(candidates, dim=1)  # [C, K]


def select_candidates(
    anchor_centers: Tensor, gt_centers: Tensor, num_anchors_per_level: Sequence[int], k: int
) -> Tensor:
    """``select_closest_per_level`` on anchors, [N, 2] x [C, 2] -> [C, K].

    When anchors come in runs of A with one centre and A divides k, ranking the k/A closest
    locations and taking all their anchors gives the same set A times faster (ties go to the
    lower index either way).
    """
    per_location = count_anchors_per_location(anchor_centers, num_anchors_per_level)
    if per_location == 1 or k % per_location:
        return select_closest_per_level(anchor_centers, gt_centers, num_anchors_per_level, k)
    locations = select_closest_per_level(
        anchor_centers[::per_location], gt_centers,
        [n // per_location for n in num_anchors_per_level], k // per_location,
    )  # [C, K / A]
    offsets = torch.arange(per_location, device=locations.device)
    return (locations[:, :, None] * per_location + offsets).flatten(1)  # [C, K]


def resolve_claims(
    candidates: Tensor, scores: Tensor, batch_size: int, num_gt: int, num_anchors: int
) -> Tensor:
    """Each anchor goes to the claiming GT of its image with the highest score.

    candidates [C, K] anchor indices (distinct within a row), scores [C, K] with -inf where the
    row's GT does not claim that anchor; row c is GT slot c % num_gt of image c // num_gt.
    Exact ties go to the lower GT index. Returns [B, N]: GT index or BACKGROUND.
    """
    device = candidates.device
    rows = torch.arange(candidates.shape[0], device=device)  # [C]
    image, slot = rows // num_gt, rows % num_gt
    key = (image[:, None] * num_anchors + candidates).reshape(-1)  # [C*K] into B*N
    flat_scores = scores.reshape(-1)
    best = torch.full((batch_size * num_anchors,), -math.inf, dtype=scores.dtype, device=device)
    best.scatter_reduce_(0, key, flat_scores, reduce="amax")  # [B*N]
    is_best = (flat_scores == best[key]) & (flat_scores > -math.inf)
    winner_slot = torch.where(is_best, slot[:, None].expand_as(scores).reshape(-1), num_gt)
    winner = torch.full((batch_size * num_anchors,), num_gt, dtype=torch.int64, device=device)
    winner.scatter_reduce_(0, key, winner_slot, reduce="amin")  # [B*N]
    winner = torch.where(winner < num_gt, winner, BACKGROUND)
    return winner.reshape(batch_size, num_anchors)
