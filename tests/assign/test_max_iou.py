"""The IoU rule on hand-made boxes whose IoUs are exact."""
from __future__ import annotations

import torch
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from atss_bench.assign import BACKGROUND as BG
from atss_bench.assign import IGNORE as IG
from atss_bench.assign import assign, assign_batched

ANCHORS = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt 0
    [0.0, 0.0, 10.0, 5.0],  # 0.5 with gt 0: positive (>= fg, inclusive)
    [0.0, 0.0, 10.0, 4.5],  # 0.45: ignored
    [0.0, 0.0, 10.0, 4.0],  # 0.4: ignored (>= bg, inclusive)
    [0.0, 0.0, 10.0, 3.0],  # 0.3: background
    [100.0, 100.0, 110.0, 110.0],  # 0.25 with gt 1: gt 1's best, a low-quality match
    [110.0, 110.0, 120.0, 120.0],  # 0.25 with gt 1 too: ties are matched as well
])
GT_BOXES = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],
    [100.0, 100.0, 120.0, 120.0],
    [500.0, 500.0, 510.0, 510.0],  # overlaps no anchor: max IoU 0
])


def test_thresholds_are_inclusive_and_low_quality_ties_all_match():
    result = assign("max_iou", ANCHORS, [7], GT_BOXES)
    assert torch.equal(result, torch.tensor([0, 0, IG, IG, BG, 1, 1]))


def test_without_low_quality_matches():
    result = assign("max_iou", ANCHORS, [7], GT_BOXES, low_quality_matches=False)
    assert torch.equal(result, torch.tensor([0, 0, IG, IG, BG, BG, BG]))


def test_a_gt_with_max_iou_zero_makes_no_low_quality_match():
    ours = assign("max_iou", ANCHORS, [7], GT_BOXES)
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)(box_iou(GT_BOXES, ANCHORS))
    # torchvision promotes every anchor (all tie gt 2's maximum, 0): anchor 4 would become gt 0's
    assert matcher[4] == 0 and ours[4] == BG
    # without that GT the two agree exactly
    matcher_two = Matcher(0.5, 0.4, allow_low_quality_matches=True)(box_iou(GT_BOXES[:2], ANCHORS))
    assert torch.equal(assign("max_iou", ANCHORS, [7], GT_BOXES[:2]), matcher_two)


def test_low_quality_match_goes_to_the_anchors_own_best_gt():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gt_boxes = torch.tensor([[0.0, 0.0, 10.0, 3.0], [0.0, 0.0, 10.0, 2.0]])  # IoU 0.3 and 0.2
    assert torch.equal(assign("max_iou", anchors, [1], gt_boxes), torch.tensor([0]))
    assert torch.equal(assign("max_iou", anchors, [1], gt_boxes.flip(0)), torch.tensor([1]))


def test_center_in_gt_ignores_positives_centred_outside_their_gt():
    anchors = torch.tensor([
        [-5.0, 0.0, 5.0, 10.0],  # IoU 1/3, gt 0's best -> low-quality match; centre on its edge
        [20.0, 0.0, 30.0, 10.0],  # IoU 1 with gt 1, centre inside
        [100.0, 0.0, 110.0, 10.0],  # far: background either way
    ])
    gt_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    plain = assign("max_iou", anchors, [3], gt_boxes)
    assert torch.equal(plain, torch.tensor([0, 1, BG]))
    in_gt = assign("max_iou", anchors, [3], gt_boxes, center_in_gt=True)
    assert torch.equal(in_gt, torch.tensor([IG, 1, BG]))


def test_center_in_gt_needs_a_margin_of_0_01():
    anchors = torch.tensor([[-5.0, 0.0, 5.0, 10.0]])  # centre x = 0
    inside = assign("max_iou", anchors, [1], torch.tensor([[-0.02, 0.0, 10.0, 10.0]]),
                    center_in_gt=True)
    on_margin = assign("max_iou", anchors, [1], torch.tensor([[-0.005, 0.0, 10.0, 10.0]]),
                       center_in_gt=True)
    assert torch.equal(inside, torch.tensor([0])) and torch.equal(on_margin, torch.tensor([IG]))


def test_batched_padding_never_wins():
    gt_boxes = torch.stack([GT_BOXES, torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)])  # [2, 3, 4]
    gt_valid = torch.tensor([[True, True, False], [False, False, True]])
    result = assign_batched("max_iou", ANCHORS, [7], gt_boxes, gt_valid)
    assert torch.equal(result[0], torch.tensor([0, 0, IG, IG, BG, 1, 1]))
    assert torch.equal(result[1], torch.tensor([2, 2, IG, IG, BG, BG, BG]))
