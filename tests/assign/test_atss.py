"""ATSS on three anchors in a row, where mean + std can be worked out by hand."""
from __future__ import annotations

import torch

from atss_bench.assign import BACKGROUND as BG
from atss_bench.assign import assign
from atss_bench.boxes import generate_anchors

ROW = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0], [20.0, 0.0, 30.0, 10.0]])


def run(gt_boxes, topk, anchors=ROW, **params):
    return assign("atss", anchors, [len(anchors)], torch.tensor(gt_boxes), topk=topk, **params)


def test_threshold_is_mean_plus_unbiased_std():
    # topk 3: IoUs (1, 0, 0), threshold 1/3 + sqrt(1/3) = 0.91: the first anchor
    assert torch.equal(run([[0.0, 0.0, 10.0, 10.0]], topk=3), torch.tensor([0, BG, BG]))
    # topk 2: IoUs (1, 0), threshold 0.5 + sqrt(0.5) = 1.21 (a population std would give 1.0)
    assert torch.equal(run([[0.0, 0.0, 10.0, 10.0]], topk=2), torch.tensor([BG, BG, BG]))


def test_single_candidate_passes_its_own_threshold():
    assert torch.equal(run([[0.0, 0.0, 10.0, 10.0]], topk=1), torch.tensor([0, BG, BG]))


def test_distance_tie_goes_to_the_lower_anchor_index():
    # GT centre x = 10: anchors 0 and 1 equally close, same IoU 90 / 190; topk 1 takes anchor 0
    assert torch.equal(run([[1.0, 0.0, 19.0, 10.0]], topk=1), torch.tensor([0, BG, BG]))


def test_centre_must_be_inside_by_more_than_0_01():
    # one candidate (anchor 0, centre x = 5): l = 5 - x0
    assert torch.equal(run([[4.98, 0.0, 15.0, 10.0]], topk=1), torch.tensor([0, BG, BG]))
    assert torch.equal(run([[4.995, 0.0, 15.0, 10.0]], topk=1), torch.tensor([BG, BG, BG]))
    assert torch.equal(run([[5.0, 0.0, 15.0, 10.0]], topk=1), torch.tensor([BG, BG, BG]))


def test_anchor_claimed_by_two_gts_goes_to_the_higher_iou():
    # both GTs' single candidate is anchor 0: IoU 1 vs 100 / 120
    gt_boxes = [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 12.0, 10.0]]
    assert torch.equal(run(gt_boxes, topk=1), torch.tensor([0, BG, BG]))
    assert torch.equal(run(gt_boxes[::-1], topk=1), torch.tensor([1, BG, BG]))
    # equal IoU: the lower GT index
    assert torch.equal(run([gt_boxes[1], gt_boxes[1]], topk=1), torch.tensor([0, BG, BG]))


def test_topk_counts_anchors_per_location():
    (anchors,) = generate_anchors([(3, 3)], [8], 1.0, 3, [0.5, 1.0, 2.0])  # 9 per location
    centre = anchors[4 * 9 + 3]  # square scale-0 anchor of the middle location: [4, 4, 20, 20]
    gt_boxes = [centre.tolist()]
    # k = 1 * 9: the 9 anchors of the middle location are the candidates; IoUs 1 (itself) and
    # 0.25-0.63 for the other shapes, so only the GT's own anchor clears mean + std
    per_location = run(gt_boxes, topk=1, anchors=anchors, num_anchors_per_location=9)
    assert (per_location >= 0).nonzero()[:, 0].tolist() == [39]
    # k = 1: only the location's first anchor (ratio 0.5, scale 0) is a candidate, and positive
    one = run(gt_boxes, topk=1, anchors=anchors, num_anchors_per_location=1)
    assert (one >= 0).nonzero()[:, 0].tolist() == [36]
