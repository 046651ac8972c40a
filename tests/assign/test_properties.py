"""Every rule equals its plain per-GT reference on random scenes; max_iou equals torchvision.

Scenes: P3-P7 anchors of an 800x1216 image (#A=1 and #A=9), 0-100 GTs of 4-600 px, every other
scene with integer coordinates (centres on GT edges and distance ties become common). Fixed
seeds; 26 scenes per rule variant at #A=1 and 3 at #A=9: 206 scene checks, plus the
torchvision comparisons and 20 scenes of arbitrary (non-grid) anchors for every rule.
"""
from __future__ import annotations

import functools

import pytest
import torch
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from atss_bench.assign import assign
from tests.assign.reference import (
    FCOS_RANGES,
    STRIDES,
    make_anchors,
    random_gt_boxes,
    reference_atss,
    reference_fcos,
    reference_max_iou,
    reference_topk_scale,
)

SEEDS = {1: range(26), 9: range(100, 103)}


@functools.cache
def anchors_of(num_anchors_per_location: int):
    return make_anchors(num_anchors_per_location)


def scene(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    num_gt = 0 if seed % 15 == 0 else int(torch.randint(1, 101, (1,), generator=generator))
    return random_gt_boxes(generator, num_gt, integer=seed % 2 == 0)


def check_scenes(num_anchors_per_location, ours, reference):
    anchors, napl = anchors_of(num_anchors_per_location)
    for seed in SEEDS[num_anchors_per_location]:
        gt_boxes = scene(seed)
        got, expected = ours(anchors, napl, gt_boxes), reference(anchors, napl, gt_boxes)
        mismatches = (got != expected).nonzero()[:, 0].tolist()
        assert not mismatches, f"seed {seed}, {len(gt_boxes)} GTs: anchors {mismatches[:10]} differ"


@pytest.mark.parametrize("num_anchors_per_location", [1, 9])
@pytest.mark.parametrize("params", [
    {},
    {"center_in_gt": True},
    {"fg_iou_thresh": 0.6, "bg_iou_thresh": 0.3, "low_quality_matches": False},
])
def test_max_iou_equals_reference(num_anchors_per_location, params):
    check_scenes(
        num_anchors_per_location,
        lambda anchors, napl, gt_boxes: assign("max_iou", anchors, napl, gt_boxes, **params),
        lambda anchors, napl, gt_boxes: reference_max_iou(anchors, gt_boxes, **params),
    )


@pytest.mark.parametrize("num_anchors_per_location", [1, 9])
def test_max_iou_equals_torchvision_matcher(num_anchors_per_location):
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)  # -1 below, -2 between: ours
    anchors, napl = anchors_of(num_anchors_per_location)
    for seed in SEEDS[num_anchors_per_location]:
        gt_boxes = scene(seed)
        if len(gt_boxes) == 0:  # Matcher refuses empty targets
            continue
        expected = matcher(box_iou(gt_boxes, anchors))
        assert torch.equal(assign("max_iou", anchors, napl, gt_boxes), expected), f"seed {seed}"


@pytest.mark.parametrize("num_anchors_per_location", [1, 9])
@pytest.mark.parametrize("radius", [None, 1.5])
def test_fcos_equals_reference(num_anchors_per_location, radius):
    params = {"strides": STRIDES, "scale_ranges": FCOS_RANGES, "center_sampling_radius": radius}
    check_scenes(
        num_anchors_per_location,
        lambda anchors, napl, gt_boxes: assign("fcos", anchors, napl, gt_boxes, **params),
        lambda anchors, napl, gt_boxes: reference_fcos(anchors, napl, gt_boxes, **params),
    )


@pytest.mark.parametrize("num_anchors_per_location", [1, 9])
def test_topk_scale_equals_reference(num_anchors_per_location):
    params = {"strides": STRIDES, "scale_ranges": FCOS_RANGES, "topk": 9,
              "num_anchors_per_location": num_anchors_per_location}
    check_scenes(
        num_anchors_per_location,
        lambda anchors, napl, gt_boxes: assign("topk_scale", anchors, napl, gt_boxes, **params),
        lambda anchors, napl, gt_boxes: reference_topk_scale(anchors, napl, gt_boxes, **params),
    )


@pytest.mark.parametrize("num_anchors_per_location, topk, per_location", [
    (1, 9, 1),
    (9, 9, 9),
    (9, 4, 1),  # k = 4 is not a whole number of locations: the anchor-level path
])
def test_atss_equals_reference(num_anchors_per_location, topk, per_location):
    params = {"topk": topk, "num_anchors_per_location": per_location}
    check_scenes(
        num_anchors_per_location,
        lambda anchors, napl, gt_boxes: assign("atss", anchors, napl, gt_boxes, **params),
        lambda anchors, napl, gt_boxes: reference_atss(anchors, napl, gt_boxes, **params),
    )


def test_all_rules_equal_references_on_arbitrary_anchors():
    """Anchors in no grid (no shared centres): the generic paths, and k above a level's size."""
    for seed in range(20):
        generator = torch.Generator().manual_seed(1000 + seed)
        anchors = random_gt_boxes(generator, 300, integer=seed % 2 == 0, image_size=(256, 256))
        napl = [200, 95, 5]
        gt_boxes = random_gt_boxes(generator, seed * 3 % 31, integer=seed % 2 == 1,
                                   image_size=(256, 256))
        levels = {"strides": (8, 16, 32), "scale_ranges": ((0, 40), (40, 80), (80, 1e9))}
        checks = [
            (assign("max_iou", anchors, napl, gt_boxes, center_in_gt=True),
             reference_max_iou(anchors, gt_boxes, center_in_gt=True)),
            (assign("fcos", anchors, napl, gt_boxes, **levels, center_sampling_radius=2.0),
             reference_fcos(anchors, napl, gt_boxes, **levels, center_sampling_radius=2.0)),
            (assign("topk_scale", anchors, napl, gt_boxes, **levels, topk=7),
             reference_topk_scale(anchors, napl, gt_boxes, **levels, topk=7)),
            (assign("atss", anchors, napl, gt_boxes, topk=7),
             reference_atss(anchors, napl, gt_boxes, topk=7)),
        ]
        for rule, (got, expected) in zip(["max_iou", "fcos", "topk_scale", "atss"], checks):
            assert torch.equal(got, expected), f"{rule}, seed {seed}"
