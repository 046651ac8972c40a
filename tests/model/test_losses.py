"""Targets and losses on hand-made cases with exact answers."""
from __future__ import annotations

import math

import pytest
import torch

import atss_bench.model.losses as losses_module
from atss_bench.model.coder import RegressionCoder
from atss_bench.model.losses import LossSettings, compute_losses
from atss_bench.model.targets import (
    Assigner,
    BatchTargets,
    build_targets,
    centerness_targets,
)

LOG2 = math.log(2.0)


def test_centerness_target_hand_case():
    anchors = torch.tensor([
        [6.0, 6.0, 14.0, 14.0],      # centre (10, 10)
        [16.0, 6.0, 24.0, 14.0],     # centre (20, 10): the GT centre
        [46.0, 6.0, 54.0, 14.0],     # centre (50, 10): outside the GT
    ])
    gt = torch.tensor([[0.0, 5.0, 40.0, 15.0]]).expand(3, 4)
    # (10, 10): l 10, r 30, t 5, b 5 -> sqrt(10/30 * 5/5)
    expected = torch.tensor([math.sqrt(1.0 / 3.0), 1.0, 0.0])
    assert torch.allclose(centerness_targets(anchors, gt), expected)


def test_build_targets_one_hot_and_masks():
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [40, 40, 50, 50]]),
                "labels": torch.tensor([2, 0])},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}]
    assigner = Assigner("max_iou", {"fg_iou_thresh": 0.5, "bg_iou_thresh": 0.4})
    out = build_targets(assigner, anchors, [3], targets, num_classes=3)
    assert out.matched.tolist() == [[0, -1, 1], [-1, -1, -1]]
    assert out.cls[0].tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert out.cls[1].sum() == 0
    assert out.positive.tolist() == [[True, False, True], [False, False, False]]
    assert torch.equal(out.boxes, targets[0]["boxes"])


def _targets(matched: list[int], boxes: torch.Tensor, labels: list[int], num_classes: int
             ) -> BatchTargets:
    matched_t = torch.tensor([matched])
    positive = matched_t >= 0
    cls = torch.zeros(1, len(matched), num_classes)
    for i, m in enumerate(matched):
        if m >= 0:
            cls[0, i, labels[m]] = 1.0
    return BatchTargets(matched_t, cls, positive, matched_t != -2,
                        boxes[matched_t[positive]])


ANCHORS = torch.tensor([[0.0, 0, 16, 16], [-4, 0, 12, 16], [32, 32, 48, 48], [64, 64, 80, 80]])
STRIDES = torch.full((4,), 8.0)
GT = torch.tensor([[0.0, 0, 16, 16]])


def _loss(settings, matched, reg=None, centerness=True):
    cls = torch.zeros(1, 4, 2)  # p = 0.5 everywhere
    reg = torch.zeros(1, 4, 4) if reg is None else reg
    ctr = torch.zeros(1, 4) if centerness else None
    targets = _targets(matched, GT, [1], num_classes=2)
    return compute_losses(settings, RegressionCoder("point"), cls, reg, ctr, ANCHORS, STRIDES,
                          targets)


def test_focal_loss_normalised_by_positives_ignoring_ignored():
    settings = LossSettings(focal_alpha=0.25, focal_gamma=2.0)
    # anchors 0, 1 positive; 2 ignored; 3 background. At p = 0.5 one element costs
    # alpha_t * 0.5 ** 2 * log 2: positive anchor 0.25 + 0.75, background 2 x 0.75 (x 0.25 log 2).
    losses = _loss(settings, [0, 0, -2, -1])
    expected = (2 * (0.25 + 0.75) + 2 * 0.75) * 0.25 * LOG2 / 2
    assert losses["loss_cls"].item() == pytest.approx(expected, rel=1e-6)
    # the same anchor as background instead of ignored adds its cost
    losses = _loss(settings, [0, 0, -1, -1])
    assert losses["loss_cls"].item() == pytest.approx(expected + 1.5 * 0.25 * LOG2 / 2, rel=1e-6)


def _smooth_l1(d: float, beta: float) -> float:
    d = abs(d)
    return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


def test_smooth_l1_regression_normalised_by_positives_or_centerness():
    beta = 1.0 / 9.0
    # point targets (ltrb / 8): anchor 0 centre (8, 8) -> (1, 1, 1, 1); anchor 1 centre (4, 8)
    # -> (0.5, 1, 1.5, 1); predictions are 0.
    per_pos = [4 * _smooth_l1(1.0, beta),
               sum(_smooth_l1(v, beta) for v in (0.5, 1.0, 1.5, 1.0))]
    plain = LossSettings(regression="smooth_l1", regression_weight=2.0, smooth_l1_beta=beta,
                         weight_by_centerness=False)
    losses = _loss(plain, [0, 0, -1, -1])
    assert losses["loss_reg"].item() == pytest.approx(2.0 * sum(per_pos) / 2, rel=1e-6)
    weighted = LossSettings(regression="smooth_l1", regression_weight=2.0, smooth_l1_beta=beta,
                            weight_by_centerness=True)
    ctr = [1.0, math.sqrt(4.0 / 12.0)]  # l/r = 4/12, t/b = 1
    losses = _loss(weighted, [0, 0, -1, -1])
    expected = 2.0 * (per_pos[0] * ctr[0] + per_pos[1] * ctr[1]) / (ctr[0] + ctr[1])
    assert losses["loss_reg"].item() == pytest.approx(expected, rel=1e-6)
    # centerness BCE at logit 0 against targets 1 and sqrt(1/3): log 2 each, / 2 positives
    assert losses["loss_centerness"].item() == pytest.approx(LOG2, rel=1e-6)


def test_giou_loss_zero_for_exact_prediction():
    reg = torch.zeros(1, 4, 4)
    reg[0, 0] = torch.tensor([1.0, 1.0, 1.0, 1.0])  # anchor 0 predicts exactly the GT
    losses = _loss(LossSettings(regression="giou", weight_by_centerness=False), [0, -1, -1, -1],
                   reg=reg, centerness=False)
    assert losses["loss_reg"].item() == pytest.approx(0.0, abs=1e-6)
    assert set(losses) == {"loss_cls", "loss_reg"}


def test_no_positives_gives_finite_zero_regression_with_gradient():
    reg = torch.zeros(1, 4, 4, requires_grad=True)
    losses = _loss(LossSettings(), [-1, -1, -1, -1], reg=reg)
    assert losses["loss_reg"].item() == 0.0 and losses["loss_centerness"].item() == 0.0
    # normalised by max(num_pos, 1): 4 background anchors x 2 x 0.75 x 0.25 log 2
    assert losses["loss_cls"].item() == pytest.approx(8 * 0.75 * 0.25 * LOG2, rel=1e-6)
    losses["loss_reg"].backward()
    assert reg.grad is not None


def _two_processes(monkeypatch, all_reduce) -> None:
    """torch.distributed as seen by one of 2 processes; ``all_reduce`` adds the other's part."""
    class FakeDist:
        is_available = is_initialized = staticmethod(lambda: True)
        get_world_size = staticmethod(lambda: 2)

    FakeDist.all_reduce = staticmethod(all_reduce)
    monkeypatch.setattr(losses_module, "dist", FakeDist)


def test_normalisers_are_averaged_over_processes(monkeypatch):
    """With 2 processes, the positives (2 here, 4 on the other) are averaged: 3."""
    _two_processes(monkeypatch, lambda tensor: tensor.add_(
        4.0 if tensor.numel() == 1 and tensor.item() == 2.0 else tensor))
    losses = _loss(LossSettings(), [0, 0, -2, -1])
    expected = (2 * (0.25 + 0.75) + 2 * 0.75) * 0.25 * LOG2 / 3
    assert losses["loss_cls"].item() == pytest.approx(expected, rel=1e-6)


def _retinanet_case(settings: LossSettings) -> dict[str, torch.Tensor]:
    """One image, box regression (10, 10, 5, 5): anchor 0 positive for the GT [4, 0, 20, 16]
    (targets dx = 10 * 4 / 16 = 2.5, dy = dw = dh = 0), anchors 1-3 background, all outputs 0."""
    targets = _targets([0, -1, -1, -1], torch.tensor([[4.0, 0, 20, 16]]), [1], num_classes=2)
    return compute_losses(settings, RegressionCoder("box"), torch.zeros(1, 4, 2),
                          torch.zeros(1, 4, 4), None, ANCHORS, STRIDES, targets)


def test_official_retinanet_loss_hand_case():
    """maskrcnn-benchmark RetinaNet: smooth L1 (beta 0.11) summed / max(1, P * 4.0) = weight 0.25
    over P positives; focal loss / (P + images)."""
    official = LossSettings(regression="smooth_l1", regression_weight=0.25, smooth_l1_beta=0.11,
                            weight_by_centerness=False, normalizer="retinanet")
    losses = _retinanet_case(official)
    assert losses["loss_reg"].item() == pytest.approx((2.5 - 0.5 * 0.11) / (1 * 4.0), rel=1e-6)
    # focal at p = 0.5: positive anchor (0.25 + 0.75), 3 background anchors 2 x 0.75 each,
    # x 0.25 log 2, divided by 1 positive + 1 image
    focal_sum = (1.0 + 3 * 1.5) * 0.25 * LOG2
    assert losses["loss_cls"].item() == pytest.approx(focal_sum / 2, rel=1e-6)
    atss_norm = LossSettings(regression="smooth_l1", regression_weight=0.25, smooth_l1_beta=0.11,
                             weight_by_centerness=False)
    assert _retinanet_case(atss_norm)["loss_cls"].item() == pytest.approx(focal_sum, rel=1e-6)


def test_retinanet_normaliser_is_this_process_own(monkeypatch):
    """Unlike "mean_pos", the RetinaNet normaliser is not averaged over processes."""
    _two_processes(monkeypatch, lambda tensor: tensor.add_(9.0))  # the other has 9 positives
    focal_sum = (1.0 + 3 * 1.5) * 0.25 * LOG2
    retina = LossSettings(regression="smooth_l1", weight_by_centerness=False,
                          normalizer="retinanet")
    assert _retinanet_case(retina)["loss_cls"].item() == pytest.approx(focal_sum / 2, rel=1e-6)
    mean_pos = LossSettings(regression="smooth_l1", weight_by_centerness=False)
    assert _retinanet_case(mean_pos)["loss_cls"].item() == pytest.approx(focal_sum / 5, rel=1e-6)
