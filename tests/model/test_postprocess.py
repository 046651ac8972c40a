"""Inference on a hand-made prediction: threshold before centerness, top-n, NMS, sqrt score."""
from __future__ import annotations

import math

import torch

from atss_bench.model.coder import RegressionCoder
from atss_bench.model.postprocess import InferenceSettings, postprocess_detections

ANCHORS = torch.tensor([
    [0.0, 0, 10, 10],
    [1.0, 0, 11, 10],          # IoU 90 / 110 with anchor 0
    [50.0, 50, 60, 60],
    [100.0, 100, 110, 110],    # crosses the 105 x 105 image
])
PROBS = torch.tensor([[0.9, 0.02], [0.8, 0.7], [0.04, 0.3], [0.6, 0.01]])


def _run(**settings):
    cls = torch.logit(PROBS)[None]  # [1, 4, 2]
    reg = torch.zeros(1, 4, 4)  # zero deltas decode to the anchors
    ctr = torch.zeros(1, 4)  # sigmoid 0.5
    args = {"score_thresh": 0.05, "pre_nms_top_n": 4, "nms_thresh": 0.6, "detections_per_img": 3}
    args.update(settings)
    return postprocess_detections(InferenceSettings(**args), RegressionCoder("box"), [cls], [reg],
                                  [ctr], [ANCHORS], [torch.full((4,), 8.0)], [(105, 105)])[0]


def test_threshold_topn_nms_and_sqrt_score():
    out = _run()
    # Candidates over 0.05 on the class score: (0, c0) .9, (1, c0) .8, (1, c1) .7, (2, c1) .3,
    # (3, c0) .6 -- (2, c0) at 0.04 is out although sqrt(0.04 * 0.5) = 0.14 would pass.
    # Top 4 drops (2, c1); NMS removes (1, c0) (IoU 0.82 with (0, c0), same class) but keeps
    # (1, c1) (other class); the last box is clipped to the image.
    assert out["labels"].tolist() == [0, 1, 0]
    expected_scores = [math.sqrt(0.9 * 0.5), math.sqrt(0.7 * 0.5), math.sqrt(0.6 * 0.5)]
    assert torch.allclose(out["scores"], torch.tensor(expected_scores), atol=1e-6)
    expected_boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [100, 100, 105, 105]])
    assert torch.allclose(out["boxes"], expected_boxes, atol=1e-4)


def test_detections_per_img_and_pre_nms_top_n():
    assert len(_run(detections_per_img=2)["scores"]) == 2
    out = _run(pre_nms_top_n=5)  # now (2, c1) survives to NMS and the output
    assert out["labels"].tolist() == [0, 1, 0] and len(out["scores"]) == 3
    out = _run(pre_nms_top_n=5, detections_per_img=10)
    assert len(out["scores"]) == 4
    assert out["labels"].tolist() == [0, 1, 0, 1]
    assert abs(out["scores"][-1].item() - math.sqrt(0.3 * 0.5)) < 1e-6


def test_without_centerness_scores_are_class_probabilities():
    cls = torch.logit(PROBS)[None]
    out = postprocess_detections(InferenceSettings(0.05, 1000, 0.6, 100), RegressionCoder("box"),
                                 [cls], [torch.zeros(1, 4, 4)], None, [ANCHORS],
                                 [torch.full((4,), 8.0)], [(105, 105)])[0]
    assert torch.allclose(out["scores"], torch.tensor([0.9, 0.7, 0.6, 0.3]), atol=1e-6)


def test_threshold_on_score_thresholds_the_final_score_as_torchvision_fcos():
    # Threshold 0.6. On the class score (default): p > 0.6 keeps .9, .8 and .7 (c1 of anchor 1).
    # On the final score sqrt(p * 0.5) > 0.6, i.e. p > 0.72: only .9 and .8 (both class 0, NMS
    # keeps the first).
    by_cls = _run(score_thresh=0.6, detections_per_img=10)
    by_score = _run(score_thresh=0.6, detections_per_img=10, threshold_on="score")
    assert by_cls["labels"].tolist() == [0, 1]
    assert by_score["labels"].tolist() == [0]
    assert torch.allclose(by_score["scores"], torch.tensor([math.sqrt(0.45)]), atol=1e-6)
