"""The dense detector (RetinaNet / FCOS / ATSS variants) and the one function that builds it.

    build_detector(config: ModelConfig, num_classes: int) -> DenseDetector

is the only place that reads the model config; every module below takes explicit typed arguments.
"""
from __future__ import annotations

from typing import Any

from atss_bench.assign.plugins import check_source_unchanged
from atss_bench.config import (
    ModelConfig, PluginAssign, SimOTAAssign, TaskAlignedAssign, default_scale_ranges,
)
from atss_bench.errors import ConfigError
from atss_bench.model.backbone import Backbone
from atss_bench.model.coder import RegressionCoder
from atss_bench.model.detector import AnchorSettings, DenseDetector
from atss_bench.model.fpn import FPN
from atss_bench.model.head import DenseHead
from atss_bench.model.losses import LossSettings
from atss_bench.model.postprocess import InferenceSettings
from atss_bench.model.targets import Assigner

__all__ = ["DenseDetector", "build_assigner", "build_detector"]


def build_assigner(config: ModelConfig) -> Assigner:
    """The sample-selection rule of ``config.model.assign`` with every parameter it needs."""
    assign = config.assign
    strides = config.fpn.strides
    num_anchors = config.anchors.num_anchors_per_location
    params: dict[str, Any]
    if assign.strategy == "max_iou":
        params = {"fg_iou_thresh": assign.fg_iou_thresh, "bg_iou_thresh": assign.bg_iou_thresh,
                  "low_quality_matches": assign.low_quality_matches,
                  "center_in_gt": assign.center_in_gt}
    elif assign.strategy == "fcos":
        params = {"strides": strides,
                  "scale_ranges": assign.scale_ranges or default_scale_ranges(strides),
                  "center_sampling_radius": assign.center_sampling_radius}
    elif assign.strategy == "topk_scale":
        params = {"strides": strides,
                  "scale_ranges": assign.scale_ranges or default_scale_ranges(strides),
                  "topk": assign.topk, "num_anchors_per_location": num_anchors}
    elif assign.strategy == "atss":
        params = {"topk": assign.topk, "num_anchors_per_location": num_anchors}
    elif isinstance(assign, TaskAlignedAssign):
        params = {"topk": assign.topk, "alpha": assign.alpha, "beta": assign.beta}
        if assign.warmup_iters:  # TOOD's warm-up: ATSS with its paper setting, topk 9
            warmup = Assigner("atss", {"topk": 9, "num_anchors_per_location": num_anchors})
            return Assigner(assign.strategy, params, warmup, assign.warmup_iters)
    elif isinstance(assign, SimOTAAssign):
        params = {"strides": strides, "center_radius": assign.center_radius,
                  "candidate_topk": assign.candidate_topk, "iou_weight": assign.iou_weight,
                  "cls_weight": assign.cls_weight}
    elif isinstance(assign, PluginAssign):
        check_source_unchanged(assign)  # the code that runs is the code the run id names
        params = dict(assign.params)
    else:  # unreachable: the config is a closed union
        raise ConfigError(f"unknown assign strategy {assign.strategy!r}")
    return Assigner(assign.strategy, params)


def build_detector(config: ModelConfig, num_classes: int) -> DenseDetector:
    """The whole detector (training losses and inference included) from ``config.model``."""
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    bb, fpn_cfg, head_cfg = config.backbone, config.fpn, config.head
    backbone = Backbone(bb.name, weights=bb.weights, frozen_stages=bb.frozen_stages,
                        norm=bb.norm, width=bb.width,
                        dcn_stages=tuple(bb.dcn_stages) if bb.dcn else (),
                        first_stage=fpn_cfg.min_level)
    fpn = FPN(backbone.out_channels, fpn_cfg.channels, fpn_cfg.min_level, fpn_cfg.max_level,
              fpn_cfg.extra_source)
    anchors = AnchorSettings(tuple(fpn_cfg.strides), config.anchors.octave_base_scale,
                             config.anchors.scales_per_octave, tuple(config.anchors.aspect_ratios),
                             config.anchors.offset)
    head = DenseHead(fpn_cfg.channels, num_classes, anchors.num_anchors_per_location,
                     fpn.num_levels, channels=head_cfg.channels, num_convs=head_cfg.num_convs,
                     group_norm=head_cfg.norm == "gn", centerness=head_cfg.centerness,
                     scalar_per_level=head_cfg.scalar_per_level, prior_prob=head_cfg.prior_prob,
                     point_regression=config.regression.start == "point",
                     dcn_in_tower=head_cfg.dcn_in_tower)
    loss = config.loss
    detector = DenseDetector(
        backbone, fpn, head, anchors,
        coder=RegressionCoder(config.regression.start, config.regression.box_coder_weights),
        assigner=build_assigner(config),
        loss=LossSettings(loss.focal_alpha, loss.focal_gamma, loss.regression,
                          loss.regression_weight, loss.smooth_l1_beta, loss.weight_by_centerness,
                          loss.centerness_weight, normalizer=loss.normalizer),
        inference=InferenceSettings(config.test.score_thresh, config.test.pre_nms_top_n,
                                    config.test.nms_thresh, config.test.detections_per_img,
                                    config.test.threshold_on),
        num_classes=num_classes,
    )
    # CPU layout: NCHW for frozen-BN training, NHWC otherwise (DenseDetector.preprocess).
    detector.channels_last_train = bb.norm != "frozen_bn"
    return detector
