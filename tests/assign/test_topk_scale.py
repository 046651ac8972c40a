"""Top-k + scale on a 4x4 grid of locations (centres 4, 12, 20, 28; index = 4 * row + column)."""
from __future__ import annotations

import math

import torch

from atss_bench.assign import BACKGROUND as BG
from atss_bench.assign import assign
from atss_bench.assign._common import select_candidates, select_closest_per_level
from atss_bench.boxes import box_centers, generate_anchors

OPEN = ((0.0, math.inf),)


def grid():
    (anchors,) = generate_anchors([(4, 4)], [8], 2.0, 1, [1.0])
    return anchors, [16]


def run(gt_boxes, topk, scale_ranges=OPEN):
    anchors, napl = grid()
    return assign("topk_scale", anchors, napl, torch.tensor(gt_boxes), strides=[8],
                  scale_ranges=scale_ranges, topk=topk)


def test_candidates_break_distance_ties_by_lower_index():
    anchors, napl = grid()
    gt_centers = torch.tensor([[12.0, 12.0], [8.0, 4.0]])
    candidates = select_closest_per_level(box_centers(anchors), gt_centers, napl, 4)
    # (12, 12): itself, then four at distance 8 (1, 4, 6, 9), of which the lower three
    # (8, 4): two at distance 4 (0, 1), then two at sqrt(80) (4, 5); nearest first
    assert candidates[0].tolist() == [5, 1, 4, 6]
    assert candidates[1].tolist() == [0, 1, 4, 5]


def test_location_shortcut_selects_the_same_anchors():
    (anchors,) = generate_anchors([(4, 4)], [8], 1.0, 3, [0.5, 1.0, 2.0])  # 9 per location
    centers = box_centers(anchors)
    gt_centers = torch.tensor([[12.0, 12.0], [8.0, 4.0], [30.0, 1.0]])
    for k in (9, 36, 7, 200):
        fast = select_candidates(centers, gt_centers, [144], k)
        plain = select_closest_per_level(centers, gt_centers, [144], k)
        assert fast.shape == (3, min(k, 144))
        assert torch.equal(fast.sort(dim=1).values, plain.sort(dim=1).values)


def test_only_candidates_inside_their_gt_are_positive():
    # candidates 5, 1, 4, 6: the last three sit on the GT's edges
    result = run([[4.0, 4.0, 20.0, 20.0]], topk=4)
    assert torch.equal(result, torch.tensor([BG] * 5 + [0] + [BG] * 10))


def test_a_gt_with_no_candidate_inside_gets_nothing():
    # centre (6, 6): the closest location (4, 4) is outside [5, 7]
    assert torch.equal(run([[5.0, 5.0, 7.0, 7.0]], topk=9), torch.full((16,), BG))


def test_k_larger_than_the_level_and_smallest_area_wins():
    result = run([[0.0, 0.0, 32.0, 32.0], [8.0, 8.0, 16.0, 16.0]], topk=20)
    expected = torch.zeros(16, dtype=torch.int64)
    expected[5] = 1
    assert torch.equal(result, expected)


def test_scale_range_applies_to_the_candidates_level():
    levels = generate_anchors([(4, 4), (2, 2)], [8, 16], 2.0, 1, [1.0])
    anchors, napl = torch.cat(levels), [16, 4]
    result = assign("topk_scale", anchors, napl, torch.tensor([[0.0, 0.0, 32.0, 32.0]]),
                    strides=[8, 16], scale_ranges=((0.0, 20.0), (20.0, 24.0)), topk=1)
    # candidates: level 0 (12, 12) (index 5, reach 20: in [0, 20]) and level 1 (8, 8)
    # (index 16, reach 24: in [20, 24])
    expected = torch.full((20,), BG)
    expected[[5, 16]] = 0
    assert torch.equal(result, expected)
