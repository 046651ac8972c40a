"""assign(): the strategy table, parameter errors, and the degenerate inputs of every rule."""
from __future__ import annotations

import math

import pytest
import torch

from atss_bench.assign import ASSIGNERS, BACKGROUND, IGNORE, assign, assign_batched
from atss_bench.boxes import generate_anchors
from atss_bench.errors import ConfigError

STRIDES = (8, 16)
RANGES = ((0.0, 64.0), (64.0, math.inf))
PARAMS = {
    "max_iou": {},
    "fcos": {"strides": STRIDES, "scale_ranges": RANGES},
    "topk_scale": {"strides": STRIDES, "scale_ranges": RANGES},
    "atss": {},
}


def small_anchors() -> tuple[torch.Tensor, list[int]]:
    """Two levels of one 8S square per location: 4x4 at stride 8 and 1x2 at stride 16."""
    levels = generate_anchors([(4, 4), (1, 2)], STRIDES, 8.0, 1, [1.0])
    return torch.cat(levels), [len(a) for a in levels]


def test_label_space_and_table_are_fixed():
    assert (BACKGROUND, IGNORE) == (-1, -2)
    assert list(ASSIGNERS) == ["max_iou", "fcos", "topk_scale", "atss", "task_aligned", "simota"]


def test_unknown_strategy_is_a_config_error_naming_it():
    anchors, napl = small_anchors()
    with pytest.raises(ConfigError, match="'iou_topk'"):
        assign("iou_topk", anchors, napl, torch.zeros(0, 4))


@pytest.mark.parametrize("strategy", list(PARAMS))
def test_unknown_param_is_a_config_error_naming_it(strategy):
    anchors, napl = small_anchors()
    with pytest.raises(ConfigError, match="'top_k'"):
        assign(strategy, anchors, napl, torch.zeros(0, 4), top_k=9, **PARAMS[strategy])
    with pytest.raises(ConfigError, match="'top_k'"):
        no_gt, no_valid = torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool)
        assign_batched(strategy, anchors, napl, no_gt, no_valid, top_k=9, **PARAMS[strategy])


def test_missing_required_param_is_a_config_error():
    anchors, napl = small_anchors()
    with pytest.raises(ConfigError, match="'scale_ranges'"):
        assign("fcos", anchors, napl, torch.zeros(0, 4), strides=STRIDES)


@pytest.mark.parametrize("strategy, params, word", [
    ("max_iou", {"fg_iou_thresh": 0.3, "bg_iou_thresh": 0.4}, "bg_iou_thresh"),
    ("fcos", {"strides": (8,), "scale_ranges": RANGES}, "strides"),
    ("fcos", {"strides": STRIDES, "scale_ranges": ((0, 64), (64, 32))}, "scale range"),
    ("fcos", {"strides": STRIDES, "scale_ranges": RANGES, "center_sampling_radius": 0.0}, "radius"),
    ("topk_scale", {"strides": STRIDES, "scale_ranges": RANGES, "topk": 0}, "topk"),
    ("atss", {"topk": 2.5}, "topk"),
    ("atss", {"num_anchors_per_location": 0}, "num_anchors_per_location"),
])
def test_bad_param_values_are_config_errors(strategy, params, word):
    anchors, napl = small_anchors()
    with pytest.raises(ConfigError, match=word):
        assign(strategy, anchors, napl, torch.tensor([[0.0, 0.0, 10.0, 10.0]]), **params)


def test_anchor_counts_must_add_up():
    anchors, _ = small_anchors()
    with pytest.raises(ValueError, match="does not sum"):
        assign("atss", anchors, [16, 1], torch.zeros(0, 4))


@pytest.mark.parametrize("strategy", list(PARAMS))
def test_no_gt_gives_all_background(strategy):
    anchors, napl = small_anchors()
    result = assign(strategy, anchors, napl, torch.zeros(0, 4), **PARAMS[strategy])
    assert result.dtype == torch.int64
    assert torch.equal(result, torch.full((18,), BACKGROUND))


@pytest.mark.parametrize("strategy", list(PARAMS))
def test_no_anchors_gives_empty(strategy):
    result = assign(strategy, torch.zeros(0, 4), [0, 0], torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
                    **PARAMS[strategy])
    assert result.shape == (0,) and result.dtype == torch.int64


@pytest.mark.parametrize("strategy", list(PARAMS))
def test_zero_area_and_outside_gts_match_nothing(strategy):
    anchors, napl = small_anchors()
    gt_boxes = torch.tensor([
        [12.0, 12.0, 12.0, 12.0],  # a point exactly on a location
        [12.0, 4.0, 12.0, 30.0],  # a vertical segment through locations
        [500.0, 500.0, 540.0, 540.0],  # far outside the 32x32 image
    ])
    result = assign(strategy, anchors, napl, gt_boxes, **PARAMS[strategy])
    assert torch.equal(result, torch.full((18,), BACKGROUND))


def test_k_larger_than_every_level_takes_whole_levels_topk_scale():
    anchors, napl = small_anchors()
    params = {**PARAMS["topk_scale"], "topk": 50}
    result = assign("topk_scale", anchors, napl, torch.tensor([[0.0, 0.0, 32.0, 32.0]]), **params)
    # all 16 level-0 locations are inside with reach <= 28; level 1 (reach 24) is outside [64, inf]
    assert torch.equal(result, torch.tensor([0] * 16 + [BACKGROUND] * 2))


def test_k_larger_than_every_level_takes_whole_levels_atss():
    anchors, napl = small_anchors()
    gt_boxes = torch.tensor([[-56.0, -56.0, 72.0, 72.0]])  # the first level-1 anchor
    result = assign("atss", anchors, napl, gt_boxes, topk=50)
    # 18 candidates: 16 level-0 anchors inside the GT (IoU 1/4), the GT's own anchor (IoU 1) and
    # its neighbour (IoU 112*128 / (2*128**2 - 112*128) = 7/9): mean + std = 0.531
    assert torch.equal(result, torch.tensor([BACKGROUND] * 16 + [0, 0]))


def test_atss_single_candidate_has_zero_std_and_is_positive_inside_its_gt():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    result = assign("atss", anchors, [1], torch.tensor([[2.0, 2.0, 30.0, 30.0]]), topk=9)
    assert torch.equal(result, torch.tensor([0]))
    outside = assign("atss", anchors, [1], torch.tensor([[6.0, 6.0, 30.0, 30.0]]), topk=9)
    assert torch.equal(outside, torch.tensor([BACKGROUND]))


@pytest.mark.parametrize("strategy", list(PARAMS))
def test_output_follows_the_anchor_device_and_float64_works(strategy):
    anchors, napl = small_anchors()
    gt_boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [6.0, 6.0, 30.0, 26.0]])
    single = assign(strategy, anchors, napl, gt_boxes, **PARAMS[strategy])
    double = assign(strategy, anchors.double(), napl, gt_boxes.double(), **PARAMS[strategy])
    assert single.device == anchors.device
    assert torch.equal(single, double)
