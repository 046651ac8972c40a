"""SimOTA (YOLOX): exact against the loop reference, and hand-made cases."""
from __future__ import annotations

import pytest
import torch

from atss_bench.assign import BACKGROUND, assign, assign_batched
from atss_bench.boxes import generate_anchors
from atss_bench.errors import ConfigError
from tests.assign.reference import STRIDES
from tests.assign.reference_predictions import reference_simota
from tests.assign.scenes import prediction_scene


@pytest.mark.parametrize("seed", range(5))
def test_equals_the_loop_reference_on_random_scenes(seed):
    anchors, napl, gt_boxes, gt_labels, scores, boxes = prediction_scene(seed)
    result = assign("simota", anchors, napl, gt_boxes, gt_labels=gt_labels, pred_scores=scores,
                    pred_boxes=boxes, strides=STRIDES)
    expected = reference_simota(anchors, napl, gt_boxes, gt_labels, scores, boxes)
    assert torch.equal(result, expected)
    assert (result >= 0).sum() >= len(gt_boxes)  # every GT gets at least one anchor here


def test_equals_the_reference_with_other_params_and_crowded_gts():
    anchors, napl, gt_boxes, gt_labels, scores, boxes = prediction_scene(11, num_gt=8)
    params = {"center_radius": 1.5, "candidate_topk": 4, "iou_weight": 1.0, "cls_weight": 2.0}
    result = assign("simota", anchors, napl, gt_boxes, gt_labels=gt_labels, pred_scores=scores,
                    pred_boxes=boxes, strides=STRIDES, **params)
    assert torch.equal(result, reference_simota(anchors, napl, gt_boxes, gt_labels, scores,
                                                boxes, **params))


def _grid():
    return torch.cat(generate_anchors([(4, 4)], (8,), 1.0, 1, (1.0,))), [16]


def test_dynamic_k_is_the_truncated_sum_of_the_top_ious():
    # One GT over the whole 32x32 grid; predictions with IoU 1 on anchors 0-2, 0.5 elsewhere:
    # top-10 IoUs sum to 3 + 7 * 0.5 = 6.5 -> k = 6: the three perfect boxes, then the three
    # cheapest of the rest by classification cost (the highest scores: anchors 9, 10, 11).
    anchors, napl = _grid()
    gt = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    boxes = torch.tensor([[0.0, 0.0, 32.0, 16.0]]).expand(16, 4).clone()  # IoU 0.5
    boxes[:3] = gt
    scores = torch.full((16, 1), 0.2)
    scores[[9, 10, 11], 0] = 0.6
    result = assign("simota", anchors, napl, gt, gt_labels=torch.tensor([0]),
                    pred_scores=scores, pred_boxes=boxes, strides=[8], center_radius=10.0)
    assert sorted((result == 0).nonzero()[:, 0].tolist()) == [0, 1, 2, 9, 10, 11]


def test_a_doubly_claimed_anchor_goes_to_the_cheaper_gt_and_no_candidate_is_background():
    anchors, napl = _grid()
    gts = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 17.0, 17.0]])
    boxes = torch.tensor([[0.0, 0.0, 17.0, 17.0]]).expand(16, 4).clone()  # IoU 1 with GT 1
    scores = torch.full((16, 2), 0.5)
    result = assign("simota", anchors, napl, gts, gt_labels=torch.tensor([0, 1]),
                    pred_scores=scores, pred_boxes=boxes, strides=[8], center_radius=0.5)
    # k = 3 for GT 0 (IoU 0.886 x 4), 4 for GT 1 (IoU 1 x 4): both take anchors 0, 1 and 4,
    # which go to GT 1, cheaper (IoU 1); GT 0 keeps nothing.
    assert result.tolist() == [1, 1, -1, -1, 1, 1] + [BACKGROUND] * 10
    far = anchors[:, 0] > 16  # centres at x 20 / 28: in neither box nor centre region
    assert (result[far] == BACKGROUND).all()


def test_padded_batch_equals_single_calls_and_params_are_checked():
    scenes = [prediction_scene(seed) for seed in (3, 4)]
    anchors, napl = scenes[0][0], scenes[0][1]
    slots = max(len(s[2]) for s in scenes) + 2
    boxes = torch.zeros(2, slots, 4)
    labels = torch.zeros(2, slots, dtype=torch.int64)
    valid = torch.zeros(2, slots, dtype=torch.bool)
    for b, (_, _, gt, lab, _, _) in enumerate(scenes):
        boxes[b, :len(gt)], labels[b, :len(gt)], valid[b, :len(gt)] = gt, lab, True
    result = assign_batched("simota", anchors, napl, boxes, valid, gt_labels=labels,
                            pred_scores=torch.stack([s[4] for s in scenes]),
                            pred_boxes=torch.stack([s[5] for s in scenes]), strides=STRIDES)
    for b, (_, _, gt, lab, sc, pb) in enumerate(scenes):
        single = assign("simota", anchors, napl, gt, gt_labels=lab, pred_scores=sc,
                        pred_boxes=pb, strides=STRIDES)
        assert torch.equal(result[b], single)
    anchors, napl, gt, lab, sc, pb = scenes[0]
    with pytest.raises(ConfigError, match="'strides'"):
        assign("simota", anchors, napl, gt, gt_labels=lab, pred_scores=sc, pred_boxes=pb)
    with pytest.raises(ConfigError, match="strides has 2 entries"):
        assign("simota", anchors, napl, gt, gt_labels=lab, pred_scores=sc, pred_boxes=pb,
               strides=[8, 16])
