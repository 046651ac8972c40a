"""FCOS's spatial and scale constraint on a 4x4 grid of locations (centres 4, 12, 20, 28)."""
from __future__ import annotations

import math

import torch

from atss_bench.assign import BACKGROUND as BG
from atss_bench.assign import assign
from atss_bench.boxes import generate_anchors


def grid(num_anchors_per_location: int = 1):
    """One level, stride 8, 4x4 locations; index = 4 * row + column."""
    if num_anchors_per_location == 1:
        (anchors,) = generate_anchors([(4, 4)], [8], 2.0, 1, [1.0])
    else:
        (anchors,) = generate_anchors([(4, 4)], [8], 1.0, 3, [0.5, 1.0, 2.0])
    return anchors, [len(anchors)]


def locations(*indices: int, value: int = 0) -> torch.Tensor:
    result = torch.full((16,), BG)
    result[list(indices)] = value
    return result


def run(gt_boxes, scale_ranges=((0.0, 64.0),), **params):
    anchors, napl = grid()
    return assign("fcos", anchors, napl, torch.tensor(gt_boxes), strides=[8],
                  scale_ranges=scale_ranges, **params)


def test_a_centre_on_a_gt_edge_is_outside():
    # x and y in (4, 20) strictly: only the location (12, 12)
    assert torch.equal(run([[4.0, 4.0, 20.0, 20.0]]), locations(5))


def test_scale_range_is_inclusive_at_both_ends():
    # inside: the 3x3 locations with x, y in {4, 12, 20}; reach 12 at (12, 12), 20 elsewhere
    gt_boxes = [[0.0, 0.0, 24.0, 24.0]]
    assert torch.equal(run(gt_boxes, ((0.0, 12.0),)), locations(5))
    assert torch.equal(run(gt_boxes, ((20.0, 100.0),)), locations(0, 1, 2, 4, 6, 8, 9, 10))


def test_smallest_area_wins_and_equal_areas_go_to_the_lower_index():
    gt_boxes = [[0.0, 0.0, 32.0, 32.0], [8.0, 8.0, 16.0, 16.0], [8.0, 8.0, 16.0, 16.0]]
    expected = torch.zeros(16, dtype=torch.int64)
    expected[5] = 1
    assert torch.equal(run(gt_boxes), expected)


def test_center_sampling_keeps_locations_within_radius_times_stride():
    # radius 1.5 at stride 8: centre 16 +/- 12, i.e. x, y in (4, 28) strictly
    result = run([[0.0, 0.0, 32.0, 32.0]], center_sampling_radius=1.5)
    assert torch.equal(result, locations(5, 6, 9, 10))
    # the region is clipped to the GT: x in (9 - 12, 9 + 12) = (-3, 21) becomes (0, 18), so
    # x = 20 (outside the GT, inside the unclipped square) is not taken
    clipped = run([[0.0, 0.0, 18.0, 32.0]], center_sampling_radius=1.5)
    assert torch.equal(clipped, locations(4, 5, 8, 9))


def test_levels_take_objects_by_reach():
    levels = generate_anchors([(4, 4), (2, 2)], [8, 16], 2.0, 1, [1.0])
    anchors, napl = torch.cat(levels), [16, 4]
    ranges = ((0.0, 16.0), (16.0, math.inf))
    result = assign("fcos", anchors, napl, torch.tensor([[0.0, 0.0, 32.0, 32.0]]),
                    strides=[8, 16], scale_ranges=ranges)
    # every level-0 location has reach >= 20 > 16; the level-1 ones (reach 24) take the GT
    assert torch.equal(result, torch.tensor([BG] * 16 + [0] * 4))


def test_all_anchors_of_a_location_get_the_locations_answer():
    anchors, napl = grid(9)
    gt_boxes = torch.tensor(
        [[0.0, 0.0, 32.0, 32.0], [8.0, 8.0, 16.0, 16.0], [4.0, 4.0, 20.0, 20.0]]
    )
    result = assign("fcos", anchors, napl, gt_boxes, strides=[8], scale_ranges=((0.0, 64.0),))
    expected = run(gt_boxes.tolist())
    assert torch.equal(result, expected.repeat_interleave(9))
