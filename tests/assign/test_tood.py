"""Task-aligned assignment (TOOD): exact against the loop reference, and hand-made cases."""
from __future__ import annotations

import pytest
import torch

from atss_bench.assign import BACKGROUND, assign, assign_batched
from atss_bench.boxes import generate_anchors
from atss_bench.errors import ConfigError
from tests.assign.reference_predictions import reference_task_aligned
from tests.assign.scenes import prediction_scene


@pytest.mark.parametrize("seed", range(6))
def test_equals_the_loop_reference_on_random_scenes(seed):
    anchors, napl, gt_boxes, gt_labels, scores, boxes = prediction_scene(seed)
    result = assign("task_aligned", anchors, napl, gt_boxes, gt_labels=gt_labels,
                    pred_scores=scores, pred_boxes=boxes)
    expected = reference_task_aligned(anchors, gt_boxes, gt_labels, scores, boxes)
    assert torch.equal(result, expected)
    assert (result >= 0).any()  # the scenes do have positives


@pytest.mark.parametrize("topk, alpha, beta", [(3, 1.0, 6.0), (20, 0.5, 2.0)])
def test_equals_the_reference_with_other_params(topk, alpha, beta):
    anchors, napl, gt_boxes, gt_labels, scores, boxes = prediction_scene(7)
    result = assign("task_aligned", anchors, napl, gt_boxes, gt_labels=gt_labels,
                    pred_scores=scores, pred_boxes=boxes, topk=topk, alpha=alpha, beta=beta)
    expected = reference_task_aligned(anchors, gt_boxes, gt_labels, scores, boxes, topk, alpha,
                                      beta)
    assert torch.equal(result, expected)


def _one_level(size=(4, 4)):
    return torch.cat(generate_anchors([size], (8,), 1.0, 1, (1.0,))), [size[0] * size[1]]


def test_topk_comes_before_the_centre_test():
    # 16 anchors on a 4x4 grid (centres 4, 12, 20, 28). The GT covers the centres 4 and 12 of
    # row 0 only; the best-aligned predictions sit on anchors whose centres are outside it.
    anchors, napl = _one_level()
    gt = torch.tensor([[0.0, 0.0, 16.0, 8.0]])
    boxes = gt.expand(16, 4).clone()
    scores = torch.full((16, 1), 0.1)
    scores[[5, 6, 7], 0] = 0.9  # outside the GT: they win the top-3, then fail the centre test
    scores[0, 0] = 0.5  # inside, but 4th
    result = assign("task_aligned", anchors, napl, gt, gt_labels=torch.tensor([0]),
                    pred_scores=scores, pred_boxes=boxes, topk=3)
    assert result.tolist() == [BACKGROUND] * 16
    result = assign("task_aligned", anchors, napl, gt, gt_labels=torch.tensor([0]),
                    pred_scores=scores, pred_boxes=boxes, topk=4)
    assert result.tolist() == [0] + [BACKGROUND] * 15


def test_shared_anchor_goes_to_the_higher_iou_and_zero_alignment_is_never_positive():
    anchors, napl = _one_level()
    gts = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 32.0, 32.0]])
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]]).expand(16, 4).clone()  # IoU 1 and 0.25
    scores = torch.full((16, 2), 0.5)
    scores[:, 1] = 0.0  # GT 1's class scores 0 everywhere: t = 0, no positive for it
    labels = torch.tensor([0, 1])
    result = assign("task_aligned", anchors, napl, gts, gt_labels=labels, pred_scores=scores,
                    pred_boxes=boxes, topk=16)
    inside_first = {0, 1, 4, 5}  # centres (4|12, 4|12) are inside GT 0
    assert {i for i, v in enumerate(result.tolist()) if v == 0} == inside_first
    assert (result != 1).all()
    scores[:, 1] = 0.5
    result = assign("task_aligned", anchors, napl, gts, gt_labels=labels, pred_scores=scores,
                    pred_boxes=boxes, topk=16)
    assert all(result[i] == 0 for i in inside_first)  # IoU 1 beats IoU 0.25
    assert (result == 1).sum() == 16 - 4


def test_padded_batch_equals_single_calls():
    scenes = [prediction_scene(seed) for seed in (1, 2)]
    anchors, napl = scenes[0][0], scenes[0][1]
    slots = max(len(s[2]) for s in scenes) + 1
    boxes = torch.zeros(2, slots, 4)
    labels = torch.zeros(2, slots, dtype=torch.int64)
    valid = torch.zeros(2, slots, dtype=torch.bool)
    for b, (_, _, gt, lab, _, _) in enumerate(scenes):
        boxes[b, :len(gt)], labels[b, :len(gt)], valid[b, :len(gt)] = gt, lab, True
    scores = torch.stack([s[4] for s in scenes])
    preds = torch.stack([s[5] for s in scenes])
    result = assign_batched("task_aligned", anchors, napl, boxes, valid, gt_labels=labels,
                            pred_scores=scores, pred_boxes=preds)
    for b, (_, _, gt, lab, sc, pb) in enumerate(scenes):
        single = assign("task_aligned", anchors, napl, gt, gt_labels=lab, pred_scores=sc,
                        pred_boxes=pb)
        assert torch.equal(result[b], single)


def test_predictions_are_required_and_params_checked():
    anchors, napl, gt_boxes, gt_labels, scores, boxes = prediction_scene(0)
    with pytest.raises(ValueError, match="pred_boxes"):
        assign("task_aligned", anchors, napl, gt_boxes, gt_labels=gt_labels, pred_scores=scores)
    with pytest.raises(ConfigError, match="'top_k'"):
        assign("task_aligned", anchors, napl, gt_boxes, gt_labels=gt_labels,
               pred_scores=scores, pred_boxes=boxes, top_k=3)
    with pytest.raises(ConfigError, match="beta"):
        assign("task_aligned", anchors, napl, gt_boxes, gt_labels=gt_labels,
               pred_scores=scores, pred_boxes=boxes, beta=-1.0)


def test_pairwise_iou_matches_the_plain_formula():
    from atss_bench.assign.predictions import pairwise_iou
    from tests.assign.reference_predictions import iou_one

    _, _, gt_boxes, _, _, boxes = prediction_scene(3)
    table = pairwise_iou(gt_boxes[None], boxes[None])[0]
    for g, gt in enumerate(gt_boxes.tolist()):
        for n in range(0, len(boxes), 37):
            assert table[g, n].item() == pytest.approx(iou_one(boxes[n].tolist(), gt), abs=1e-6)
    degenerate = torch.tensor([[[5.0, 5.0, 5.0, 9.0]]])
    assert pairwise_iou(degenerate, degenerate).item() == 0.0
