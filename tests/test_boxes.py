"""atss_bench.boxes: anchor/point layout and values, and the box and point coders."""
from __future__ import annotations

import math

import pytest
import torch

from atss_bench.boxes import (
    box_centers,
    decode_boxes,
    decode_points,
    encode_boxes,
    encode_points,
    generate_anchors,
    generate_points,
    ltrb_distances,
)

P3_P7 = (8, 16, 32, 64, 128)
SIZES_800x1216 = [(math.ceil(800 / s), math.ceil(1216 / s)) for s in P3_P7]


def test_one_square_anchor_of_8s_per_location_is_location_major_row_major():
    (anchors,) = generate_anchors([(2, 3)], [8], 8.0, 1, [1.0])
    # 2 rows x 3 columns, x varies fastest; each anchor is the 64 px square around its centre
    expected = torch.tensor([
        [4 - 32, 4 - 32, 4 + 32, 4 + 32], [12 - 32, 4 - 32, 12 + 32, 4 + 32],
        [20 - 32, 4 - 32, 20 + 32, 4 + 32], [4 - 32, 12 - 32, 4 + 32, 12 + 32],
        [12 - 32, 12 - 32, 12 + 32, 12 + 32], [20 - 32, 12 - 32, 20 + 32, 12 + 32],
    ], dtype=torch.float32)
    assert torch.equal(anchors, expected)


def test_nine_anchors_are_adjacent_ratio_major_then_scale():
    (anchors,) = generate_anchors([(2, 3)], [8], 4.0, 3, [0.5, 1.0, 2.0])
    assert anchors.shape == (2 * 3 * 9, 4)
    first = anchors[:9]
    assert torch.equal(box_centers(first), torch.tensor([[4.0, 4.0]]).expand(9, 2))
    assert torch.equal(box_centers(anchors[9:18])[0], torch.tensor([12.0, 4.0]))
    assert torch.equal(box_centers(anchors[27:36])[0], torch.tensor([4.0, 12.0]))
    widths, heights = first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]
    expected_w, expected_h = [], []
    for ratio in (0.5, 1.0, 2.0):
        for i in range(3):
            base = 4.0 * 8 * 2 ** (i / 3)
            expected_w.append(base / math.sqrt(ratio))
            expected_h.append(base * math.sqrt(ratio))
    # half-sizes are rounded to 1/256 px, so sizes are within 1/256 px of the formula
    assert torch.allclose(widths, torch.tensor(expected_w), atol=1 / 256)
    assert torch.allclose(heights, torch.tensor(expected_h), atol=1 / 256)
    # the unrounded square anchor of scale 0 is exact: 32 x 32 around (4, 4)
    assert torch.equal(first[3], torch.tensor([-12.0, -12.0, 20.0, 20.0]))


def test_all_anchors_of_a_location_share_one_centre_bit_for_bit():
    levels = generate_anchors(SIZES_800x1216, P3_P7, 4.0, 3, [0.5, 1.0, 2.0])
    points = generate_points(SIZES_800x1216, P3_P7)
    for anchors, level_points in zip(levels, points):
        centers = box_centers(anchors).reshape(-1, 9, 2)
        assert torch.equal(centers, level_points[:, None, :].expand_as(centers))


def test_points_are_fcos_locations():
    points = generate_points([(3, 2), (2, 1)], [8, 16])
    assert torch.equal(points[0], torch.tensor(
        [[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0], [4.0, 20.0], [12.0, 20.0]]))
    assert torch.equal(points[1], torch.tensor([[8.0, 8.0], [8.0, 24.0]]))
    for level, stride in zip(points, [8, 16]):  # FCOS: x * stride + stride // 2
        assert torch.equal(level % stride, torch.full_like(level, stride // 2))


def test_generators_follow_device_and_dtype():
    (anchors,) = generate_anchors([(2, 2)], [8], 8.0, 1, [1.0], device="cpu", dtype=torch.float64)
    (points,) = generate_points([(2, 2)], [8], device="cpu", dtype=torch.float64)
    assert anchors.dtype == points.dtype == torch.float64
    with pytest.raises(ValueError):
        generate_anchors([(2, 2)], [8, 16], 8.0, 1, [1.0])


def test_encode_boxes_exact_values_and_round_trip():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[1.0, 2.0, 11.0, 12.0], [0.0, 0.0, 20.0, 10.0]])
    deltas = encode_boxes(boxes, anchors)
    # dx = 10 * (6 - 5) / 10, dy = 10 * (7 - 5) / 10; second: dx = 10 * 5 / 10, dw = 5 * log 2
    expected = torch.tensor([[1.0, 2.0, 0.0, 0.0], [5.0, 0.0, 5 * math.log(2.0), 0.0]])
    assert torch.allclose(deltas, expected, atol=1e-6)
    assert torch.allclose(decode_boxes(deltas, anchors), boxes, atol=1e-5)


def test_decode_boxes_clamps_log_size_at_log_1000_over_16():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    huge = torch.tensor([[0.0, 0.0, 5 * 100.0, 0.0]])  # dw = 100 after the weight
    (box,) = decode_boxes(huge, anchors)
    assert box[2] - box[0] == pytest.approx(10 * 1000 / 16, rel=1e-5)
    assert box[3] - box[1] == pytest.approx(10.0)


def test_point_coder_exact_values_and_round_trip():
    points = torch.tensor([[10.0, 10.0], [100.0, 50.0]])
    boxes = torch.tensor([[4.0, 6.0, 20.0, 30.0], [36.0, 18.0, 132.0, 82.0]])
    strides = torch.tensor([8.0, 32.0])
    deltas = encode_points(points, boxes, strides)
    assert torch.equal(deltas, torch.tensor([[6 / 8, 4 / 8, 10 / 8, 20 / 8], [2.0, 1.0, 1.0, 1.0]]))
    assert torch.equal(decode_points(deltas, points, strides), boxes)
    assert torch.equal(encode_points(points[:1], boxes[:1], 8.0), deltas[:1])


def test_ltrb_distances_broadcast_to_all_pairs():
    points = torch.tensor([[5.0, 5.0], [0.0, 5.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 3.0, 4.0, 20.0]])
    distances = ltrb_distances(points[:, None], boxes[None])  # [2, 2, 4]
    assert torch.equal(distances[0, 0], torch.tensor([5.0, 5.0, 5.0, 5.0]))
    assert torch.equal(distances[0, 1], torch.tensor([3.0, 2.0, -1.0, 15.0]))
    assert torch.equal(distances[1, 0], torch.tensor([0.0, 5.0, 10.0, 5.0]))  # on the left edge


def test_anchor_offset_moves_the_centres_as_torchvision_anchor_generator():
    (official,) = generate_anchors([(2, 2)], [8], 1.0, 1, [1.0])
    (torchvision_grid,) = generate_anchors([(2, 2)], [8], 1.0, 1, [1.0], offset=0.0)
    assert box_centers(official).tolist() == [[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]]
    assert torchvision_grid.tolist() == [[-4.0, -4.0, 4.0, 4.0], [4.0, -4.0, 12.0, 4.0],
                                         [-4.0, 4.0, 4.0, 12.0], [4.0, 4.0, 12.0, 12.0]]
