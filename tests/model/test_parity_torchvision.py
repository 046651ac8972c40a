"""Parity with torchvision's FCOS and RetinaNet: identical weights, real COCO images -> identical
per-level head outputs, loss terms and detections.

torchvision's model is built as its builder makes it without downloads
(``fcos_resnet50_fpn(weights=None, weights_backbone=None)``: trainable BatchNorm, nothing frozen),
seeded, then its last head layers are re-drawn wider (class logits and regression std 0.05;
regression bias 4 for FCOS, class bias -2 for RetinaNet, whose norm-free tower shrinks features)
so that scores spread and boxes have a size: at torchvision's own init every score is
~sigmoid(-4.6), under both models' thresholds, and every FCOS box is a point. Its weights are
copied into ours (``atss_bench.model.torchvision_weights``).

Ours runs in the configuration that matches, with the switches that turn our deliberate
differences off (each a documented config knob):

- FCOS: no per-level scalar, P6 from P5, point regression (ltrb / stride), anchors of one stride
  centred at (x S, y S) (``anchors.offset: 0.0``; official ATSS / FCOS use 0.5), FCOS rule with
  centre sampling 1.5, GIoU weight 1 not weighted by centerness, score threshold on the final
  score (``test.threshold_on: score``) 0.2, NMS 0.6.
- RetinaNet: torchvision's builder with one 32 S anchor per location (``AnchorGenerator`` sizes
  32..512, ratio 1, the paper's #A=1): its default 9 anchors have integer-truncated sizes (40, 50)
  and integer-rounded corners, which ``anchors.*`` cannot express. P6 from P5 (torchvision v1),
  head without norm, (dx, dy, dw, dh) deltas with weights (1, 1, 1, 1), L1 (= smooth L1 with
  beta 0), max-IoU 0.5 / 0.4 with low-quality matches, NMS 0.5, 300 detections. One image:
  torchvision's RetinaNet divides each image's losses by that image's positives and averages the
  images, ours (the official code's) divides the batch sum by the batch's positives; with one
  image both are the same number.

Forms that look different but compute the same and need no switch: torchvision's centre
sampling (max(|dx|, |dy|) < 1.5 x anchor size and inside the GT) is the official clipped square
ours implements; its BoxLinearCoder normalised by anchor size is our ltrb / stride (anchor size =
stride here). One difference left: FCOS's scale test is strict in torchvision (lo < m < hi) and
inclusive in ours and the official code (lo <= m <= hi); it matters only when a GT's max(l, t,
r, b) is exactly 64, 128, 256 or 512 px, which these images do not have.

The tests that run the networks are marked slow (they run in ``make test``): each of the 8
R-50 FPN passes takes 1-3 s on one thread, and fewer would leave a claim untested.

Tolerances. Ours runs in NCHW here (``detector.channels_last = False``): with the same layout the
two networks run the same kernels on the same tensors, so head outputs and detections are equal
bit for bit (checked with ``torch.equal``). In NHWC (our CPU default) the convolutions round
differently, and a randomly initialised ResNet with batch statistics amplifies that ~1e3-fold
(measured 2e-3 relative on C5), which would say nothing about our code. Losses are compared at
rtol 1e-5: the terms are the same sums reduced in a different order (ours flattens the batch,
torchvision sums per image / over a mask), float32 rounding of ~1e4 addends.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.detection import fcos_resnet50_fpn, retinanet_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator

from atss_bench.config import (
    AnchorConfig,
    BackboneConfig,
    FCOSAssign,
    FPNConfig,
    HeadConfig,
    LossConfig,
    MaxIoUAssign,
    ModelConfig,
    RegressionConfig,
)
from atss_bench.config import TestConfig as InferenceConfig
from atss_bench.data.coco import CocoDetection
from atss_bench.errors import ConfigError
from atss_bench.model import DenseDetector, build_detector
from atss_bench.model.torchvision_weights import (
    convert_torchvision_state_dict,
    load_torchvision_weights,
    map_torchvision_key,
)

NUM_CLASSES = 80
MIN_SIZE, MAX_SIZE = 320, 512  # shorter side 320: torchvision's own resize is then the identity
SEED = 0
MATCHED_BACKBONE = BackboneConfig(weights="none", norm="bn", frozen_stages=0)  # weights=None

FCOS_CONFIG = ModelConfig(
    backbone=MATCHED_BACKBONE,
    fpn=FPNConfig(extra_source="p5"),
    head=HeadConfig(norm="gn", centerness="reg", scalar_per_level=False),
    anchors=AnchorConfig(octave_base_scale=1.0, offset=0.0),
    regression=RegressionConfig(start="point"),
    assign=FCOSAssign(center_sampling_radius=1.5),
    loss=LossConfig(regression="giou", regression_weight=1.0, weight_by_centerness=False),
    test=InferenceConfig(score_thresh=0.2, pre_nms_top_n=1000, nms_thresh=0.6,
                         detections_per_img=100, threshold_on="score"),
)
RETINANET_CONFIG = ModelConfig(
    backbone=MATCHED_BACKBONE,
    fpn=FPNConfig(extra_source="p5"),
    head=HeadConfig(norm="none", centerness="none", scalar_per_level=False),
    anchors=AnchorConfig(octave_base_scale=4.0, scales_per_octave=1, aspect_ratios=[1.0],
                         offset=0.0),
    regression=RegressionConfig(start="box", box_coder_weights=(1.0, 1.0, 1.0, 1.0)),
    assign=MaxIoUAssign(fg_iou_thresh=0.5, bg_iou_thresh=0.4, low_quality_matches=True),
    loss=LossConfig(regression="smooth_l1", smooth_l1_beta=0.0, regression_weight=1.0,
                    weight_by_centerness=False),
    test=InferenceConfig(score_thresh=0.05, pre_nms_top_n=1000, nms_thresh=0.5,
                         detections_per_img=300),
)
LOSS_NAMES = {"loss_cls": "classification", "loss_reg": "bbox_regression",
              "loss_centerness": "bbox_ctrness"}


@dataclass
class Pass:
    """What one model gave on the images: head outputs (concatenated over levels), losses,
    detections."""

    train_head: dict[str, Tensor]
    losses: dict[str, Tensor]
    eval_head: dict[str, Tensor]
    detections: list[dict[str, Tensor]]


@dataclass
class Parity:
    ours: Pass
    torchvision: Pass
    level_sizes: list[int]


def load_images(root: Path, count: int) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """The first ``count`` val images resized to shorter side 320 (longer <= 512), with boxes."""
    dataset = CocoDetection(root, "val2017", train=False, min_size=MIN_SIZE, max_size=MAX_SIZE)
    images, targets = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        if min(image.shape[1:]) == MIN_SIZE and len(target["boxes"]) > 0:
            images.append(image)
            targets.append({"boxes": target["boxes"], "labels": target["labels"]})
        if len(images) == count:
            return images, targets
    pytest.skip(f"{root} has fewer than {count} usable val images")


def widen_last_layers(model: nn.Module, regression_bias: float,
                      cls_bias: float | None = None) -> None:
    head = model.head
    with torch.no_grad():
        nn.init.normal_(head.classification_head.cls_logits.weight, std=0.05)
        if cls_bias is not None:
            nn.init.constant_(head.classification_head.cls_logits.bias, cls_bias)
        nn.init.normal_(head.regression_head.bbox_reg.weight, std=0.05)
        nn.init.constant_(head.regression_head.bbox_reg.bias, regression_bias)


def ours_head_outputs(outputs: Any) -> dict[str, Tensor]:
    head = {"cls": torch.cat(outputs.cls, 1), "reg": torch.cat(outputs.reg, 1)}
    if outputs.centerness is not None:
        head["ctr"] = torch.cat(outputs.centerness, 1)
    return head


def torchvision_head_outputs(outputs: dict[str, Tensor]) -> dict[str, Tensor]:
    head = {"cls": outputs["cls_logits"], "reg": outputs["bbox_regression"]}
    if "bbox_ctrness" in outputs:
        head["ctr"] = outputs["bbox_ctrness"][..., 0]
    return head


def run_both(ours: DenseDetector, reference: nn.Module, images: list[Tensor],
             targets: list[dict[str, Tensor]]) -> Parity:
    """A train-mode pass (losses) and an eval-mode pass (detections) of each model."""
    captured: dict[str, Any] = {}
    hooks = [ours.head.register_forward_hook(lambda m, i, o: captured.update(ours=o)),
             reference.head.register_forward_hook(lambda m, i, o: captured.update(tv=o))]
    passes: dict[str, dict[str, Any]] = {"ours": {}, "tv": {}}
    try:
        with torch.no_grad():
            for name, model in (("ours", ours), ("tv", reference)):
                model.train()
                passes[name]["losses"] = model(images, targets)
                passes[name]["train_head"] = captured[name]
                model.eval()
                passes[name]["detections"] = model(images)
                passes[name]["eval_head"] = captured[name]
    finally:
        for hook in hooks:
            hook.remove()
    ours_pass = Pass(ours_head_outputs(passes["ours"]["train_head"]), passes["ours"]["losses"],
                     ours_head_outputs(passes["ours"]["eval_head"]), passes["ours"]["detections"])
    tv_pass = Pass(torchvision_head_outputs(passes["tv"]["train_head"]), passes["tv"]["losses"],
                   torchvision_head_outputs(passes["tv"]["eval_head"]),
                   passes["tv"]["detections"])
    height, width = ours.preprocess(images)[0].shape[-2:]  # padded to a multiple of 32
    strides = ours.anchor_settings.strides
    sizes = [math.ceil(height / s) * math.ceil(width / s) for s in strides]  # P3-P7 locations
    return Parity(ours_pass, tv_pass, sizes)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def matched_pair(config: ModelConfig, reference: nn.Module) -> DenseDetector:
    ours = build_detector(config, NUM_CLASSES)
    load_torchvision_weights(ours, reference.state_dict())
    ours.channels_last = False
    return ours


@pytest.fixture(scope="module")
def fcos(coco_tiny_root: Path, one_thread: None) -> Parity:
    images, targets = load_images(coco_tiny_root, 2)
    torch.manual_seed(SEED)
    reference = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                  min_size=MIN_SIZE, max_size=MAX_SIZE)
    widen_last_layers(reference, regression_bias=4.0)
    return run_both(matched_pair(FCOS_CONFIG, reference), reference, images, targets)


@pytest.fixture(scope="module")
def retinanet(coco_tiny_root: Path, one_thread: None) -> Parity:
    images, targets = load_images(coco_tiny_root, 1)
    torch.manual_seed(SEED)
    anchors = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((1.0,),) * 5)
    reference = retinanet_resnet50_fpn(weights=None, weights_backbone=None,
                                       num_classes=NUM_CLASSES, min_size=MIN_SIZE,
                                       max_size=MAX_SIZE, anchor_generator=anchors)
    widen_last_layers(reference, regression_bias=0.0, cls_bias=-2.0)
    return run_both(matched_pair(RETINANET_CONFIG, reference), reference, images, targets)


# --- the weight mapping ---------------------------------------------------------------------

@pytest.mark.parametrize(("key", "block_size", "expected"), [
    ("backbone.body.layer3.5.bn2.running_var", None, "backbone.body.layer3.5.bn2.running_var"),
    ("backbone.fpn.extra_blocks.p6.weight", None, "fpn.fpn.extra_blocks.p6.weight"),
    ("backbone.fpn.inner_blocks.2.0.bias", None, "fpn.fpn.inner_blocks.2.0.bias"),
    # FCOS: flat (conv, GroupNorm, ReLU) x 4 -- index 10 is the fourth GroupNorm
    ("head.classification_head.conv.10.weight", None, "head.cls_tower.10.weight"),
    ("head.regression_head.bbox_ctrness.bias", None, "head.centerness.bias"),
    ("head.regression_head.bbox_reg.weight", None, "head.bbox_pred.weight"),
    # RetinaNet: Conv2dNormActivation blocks, (conv, ReLU) -> ours flat at 2 i; with a norm 3 i + k
    ("head.classification_head.conv.3.0.weight", 2, "head.cls_tower.6.weight"),
    ("head.regression_head.conv.2.1.weight", 3, "head.reg_tower.7.weight"),
    ("head.classification_head.cls_logits.bias", 2, "head.cls_logits.bias"),
])
def test_map_torchvision_key(key: str, block_size: int | None, expected: str) -> None:
    assert map_torchvision_key(key, block_size) == expected


@pytest.mark.parametrize("key", [
    "roi_heads.box_predictor.cls_score.weight",  # Faster R-CNN
    "head.mask_head.conv.0.weight",
    "backbone.fpn",
    "",
])
def test_map_torchvision_key_rejects_other_models(key: str) -> None:
    with pytest.raises(ConfigError, match="no counterpart"):
        map_torchvision_key(key)


def test_retinanet_tower_key_without_block_index_is_refused() -> None:
    with pytest.raises(ConfigError, match="conv.<i>.<k>"):
        map_torchvision_key("head.classification_head.conv.0.weight", 2)


def test_every_fcos_tensor_lands_on_its_counterpart(one_thread: None) -> None:
    torch.manual_seed(SEED)
    reference = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    ours = build_detector(FCOS_CONFIG, 3)
    state = reference.state_dict()
    load_torchvision_weights(ours, state)
    converted = convert_torchvision_state_dict(state)
    own = ours.state_dict()
    assert set(converted) == set(own) and len(own) == len(state)
    assert all(torch.equal(own[key], value) for key, value in converted.items())


def test_mismatched_configurations_are_refused(one_thread: None) -> None:
    torch.manual_seed(SEED)
    state = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3).state_dict()
    with_scalar = FCOS_CONFIG.model_copy(update={"head": HeadConfig(scalar_per_level=True)})
    with pytest.raises(ConfigError, match=r"missing \['head.scales.0.scale'"):
        load_torchvision_weights(build_detector(with_scalar, 3), state)
    with pytest.raises(ConfigError, match=r"wrong shape \['head.cls_logits.bias'"):
        load_torchvision_weights(build_detector(FCOS_CONFIG, 4), state)
    state["roi_heads.extra"] = torch.zeros(1)
    with pytest.raises(ConfigError, match="no counterpart"):
        load_torchvision_weights(build_detector(FCOS_CONFIG, 3), state)


# --- FCOS -----------------------------------------------------------------------------------

def check_head_outputs(ours: dict[str, Tensor], reference: dict[str, Tensor],
                       level_sizes: list[int]) -> None:
    assert set(ours) == set(reference)
    for name, value in ours.items():
        assert value.shape == reference[name].shape, name
        assert value.shape[1] == sum(level_sizes), name
        for level, (mine, theirs) in enumerate(zip(value.split(level_sizes, 1),
                                                   reference[name].split(level_sizes, 1))):
            assert torch.equal(mine, theirs), f"{name} differs on level {level}"


def check_detections(ours: list[dict[str, Tensor]], reference: list[dict[str, Tensor]],
                     expected_count: int) -> None:
    assert len(ours) == len(reference)
    for mine, theirs in zip(ours, reference):
        assert len(mine["boxes"]) == len(theirs["boxes"]) == expected_count
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(mine[key], theirs[key]), key


@pytest.mark.slow
def test_fcos_per_level_head_outputs_agree(fcos: Parity) -> None:
    check_head_outputs(fcos.ours.train_head, fcos.torchvision.train_head, fcos.level_sizes)
    check_head_outputs(fcos.ours.eval_head, fcos.torchvision.eval_head, fcos.level_sizes)
    assert fcos.ours.train_head["reg"].min() >= 0  # relu(ltrb / stride), no scalar


@pytest.mark.slow
def test_fcos_loss_terms_agree(fcos: Parity) -> None:
    assert set(fcos.ours.losses) == set(LOSS_NAMES)
    for ours_name, tv_name in LOSS_NAMES.items():
        ours, reference = fcos.ours.losses[ours_name], fcos.torchvision.losses[tv_name]
        assert reference > 0.01, tv_name  # a real loss: the images have positives
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=0.0, msg=ours_name)


@pytest.mark.slow
def test_fcos_detections_agree(fcos: Parity) -> None:
    check_detections(fcos.ours.detections, fcos.torchvision.detections, expected_count=100)
    scores = fcos.ours.detections[0]["scores"]
    assert scores.min() > 0.2 and len(fcos.ours.detections[0]["labels"].unique()) > 1


# --- RetinaNet (#A = 1) ---------------------------------------------------------------------

@pytest.mark.slow
def test_retinanet_per_level_head_outputs_agree(retinanet: Parity) -> None:
    check_head_outputs(retinanet.ours.train_head, retinanet.torchvision.train_head,
                       retinanet.level_sizes)
    check_head_outputs(retinanet.ours.eval_head, retinanet.torchvision.eval_head,
                       retinanet.level_sizes)


@pytest.mark.slow
def test_retinanet_loss_terms_agree(retinanet: Parity) -> None:
    assert set(retinanet.ours.losses) == {"loss_cls", "loss_reg"}
    for ours_name in ("loss_cls", "loss_reg"):
        ours = retinanet.ours.losses[ours_name]
        reference = retinanet.torchvision.losses[LOSS_NAMES[ours_name]]
        assert reference > 0.01, ours_name
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=0.0, msg=ours_name)


@pytest.mark.slow
def test_retinanet_detections_agree(retinanet: Parity) -> None:
    detections = retinanet.ours.detections
    check_detections(detections, retinanet.torchvision.detections,
                     expected_count=len(detections[0]["boxes"]))
    assert 10 < len(detections[0]["boxes"]) <= 300
