"""Statistics of inspect-assign: a case counted by hand, and a plain per-image reference."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from inspect_helpers import anchor_args, random_coco, reference_positives, write_coco

from atss_bench.errors import DataError
from atss_bench.inspect import (
    RULES,
    build_anchor_settings,
    count_positives,
    load_split_ground_truth,
    resolve_rule_configs,
)
from atss_bench.inspect.run import compute_statistics
from atss_bench.model import build_assigner

# One 64x64 image, one level (stride 8, FCOS range [0, inf)), so positives are the locations
# (centres 4, 12, ..., 60) strictly inside a GT, shared ones going to the smaller GT.
HAND_ANNOTATIONS = [
    {"image_id": 1, "bbox": [8, 8, 16, 32], "area": 500.0},  # A: x 12, 20 x y 12..36 -> 8
    {"image_id": 1, "bbox": [40, 40, 4, 4], "area": 16.0},  # B: no centre strictly inside -> 0
    {"image_id": 1, "bbox": [16, 0, 48, 16], "area": 1500.0},  # C: 6 x 2 locations, 1 to A -> 11
    {"image_id": 1, "bbox": [0, 0, 64, 64], "iscrowd": 1},  # crowd: left out
    {"image_id": 1, "bbox": [60, 10, 10, 0.5]},  # 0.5 px high: dropped like a training target
]
ONE_LEVEL = {"model.fpn.min_level": 3, "model.fpn.max_level": 3, "data.test_min_size": 64,
             "data.max_size": 64}


def _hand_dataset(tmp_path):
    root = write_coco(tmp_path / "hand", [{"id": 1, "height": 64, "width": 64},
                                          {"id": 2, "height": 64, "width": 64}],
                      [dict(a) for a in HAND_ANNOTATIONS])
    config = resolve_rule_configs("full", ["fcos"], ONE_LEVEL)["fcos"]
    gt = load_split_ground_truth(root / "annotations" / "instances_val2017.json", 64, 64)
    return gt, config


def test_hand_counted_fcos(tmp_path):
    gt, config = _hand_dataset(tmp_path)
    assert gt.num_gt == 3 and list(gt.areas) == [500.0, 16.0, 1500.0]
    table, counts = compute_statistics(gt, {"fcos": config})
    assert counts["fcos"].per_level.tolist() == [[8], [0], [11]]
    # Anchors are 64 px squares: each of A's 8 contains A (IoU 512 / 4096); C's overlaps in x.
    overlaps_c = [36, 44, 48, 48, 44, 36, 44, 48, 48, 44, 36]
    iou_c = sum(16 * o / (4096 + 768 - 16 * o) for o in overlaps_c)
    assert counts["fcos"].iou_sum == pytest.approx([8 * 512 / 4096, 0.0, iou_c], rel=1e-6)

    rows = {(r.group, r.bin): r for r in table.itertuples()}
    everything = rows[("all", "all")]
    assert (everything.gts, everything.positives) == (3, 19)
    assert everything.pos_per_gt_mean == pytest.approx(19 / 3)
    assert everything.pos_per_gt_median == 8.0
    assert everything.pos_per_gt_p10 == pytest.approx(1.6)  # linear between 0 and 8
    assert everything.zero_pos_pct == pytest.approx(100 / 3)
    assert everything.P3_pct == 100.0
    assert everything.mean_iou == pytest.approx((1.0 + iou_c) / 19, rel=1e-6)
    small, medium, large = (rows[("size", b)] for b in ("small", "medium", "large"))
    assert (small.gts, small.positives, small.zero_pos_pct) == (2, 8, 50.0)
    assert small.pos_per_gt_median == 4.0
    assert (medium.gts, medium.positives, medium.zero_pos_pct) == (1, 11, 0.0)
    assert large.gts == 0 and math.isnan(large.pos_per_gt_mean) and math.isnan(large.P3_pct)
    aspect_bins = ("<1/3", "1/3-1/2", "1/2-2", "2-3", ">=3")
    assert [rows[("aspect", b)].gts for b in aspect_bins] == [0, 0, 2, 0, 1]
    assert len(table) == 9 and list(table.columns[-1:]) == ["P3_pct"]


def test_unknown_image_id_is_a_data_error(tmp_path):
    gt, _ = _hand_dataset(tmp_path)
    assert gt.image_position(2) == 1
    with pytest.raises(DataError, match="no image with id 5"):
        gt.image_position(5)


@pytest.mark.parametrize("overrides", [
    {},
    {"model.anchors.scales_per_octave": 3, "model.anchors.aspect_ratios": [0.5, 1.0, 2.0]},
])
def test_matches_plain_per_image_assign(tmp_path, overrides):
    """Every rule, grouped + pruned, equals assign() called image by image on every anchor."""
    root = random_coco(tmp_path / "random", num_images=20, seed=3)
    configs = resolve_rule_configs("mini", RULES, overrides)
    data = configs["atss"].data
    path = root / "annotations" / "instances_val2017.json"
    gt = load_split_ground_truth(path, data.test_min_size, data.max_size)
    settings = build_anchor_settings(configs["atss"].model)
    anchors = anchor_args(settings)
    table, counts = compute_statistics(gt, configs)
    for rule, config in configs.items():
        assigner = build_assigner(config.model)
        per_level, iou_sum = reference_positives(path, data.test_min_size, data.max_size,
                                                 data.size_divisibility, anchors, rule,
                                                 dict(assigner.params))
        assert gt.num_gt == len(per_level) > 50
        np.testing.assert_array_equal(counts[rule].per_level, per_level, err_msg=rule)
        np.testing.assert_allclose(counts[rule].iou_sum, iou_sum, rtol=1e-5, err_msg=rule)
        row = table[(table.rule == rule) & (table.group == "all")].iloc[0]
        positives = per_level.sum(axis=1)
        assert row.positives == positives.sum() > 0
        assert row.zero_pos_pct == pytest.approx(100 * np.mean(positives == 0))
        shares = 100 * per_level.sum(axis=0) / positives.sum()
        assert [row[f"P{i}_pct"] for i in range(3, 8)] == pytest.approx(shares.tolist())
        assert (per_level.sum(axis=0) > 0).sum() >= 2  # more than one level used


def test_count_positives_without_pruning_is_the_same(tmp_path):
    root = random_coco(tmp_path / "random", num_images=6, seed=5, sizes=((40, 300), (300, 41)))
    variants = [("atss", {"model.assign.topk": 20}), ("topk_scale", {"model.assign.topk": 1}),
                ("fcos", {"model.assign.center_sampling_radius": 1.5}),
                ("max_iou", {"model.assign.fg_iou_thresh": 0.3,
                             "model.assign.bg_iou_thresh": 0.2, "model.assign.center_in_gt": True}),
                ("atss", {"model.anchors.octave_base_scale": 4.0, "model.fpn.max_level": 5})]
    for rule, overrides in variants:
        config = resolve_rule_configs("mini", [rule], overrides)[rule]
        gt = load_split_ground_truth(root / "annotations" / "instances_val2017.json",
                                     config.data.test_min_size, config.data.max_size)
        args = (gt, build_assigner(config.model), build_anchor_settings(config.model), 32)
        pruned, full = count_positives(*args), count_positives(*args, prune=False)
        np.testing.assert_array_equal(pruned.per_level, full.per_level, err_msg=str(overrides))
        np.testing.assert_array_equal(pruned.iou_sum, full.iou_sum)
        assert pruned.positives.sum() > 0


def test_ground_truth_without_area_uses_the_box_area_and_bad_files_are_data_errors(tmp_path):
    annotations = [{"image_id": 1, "bbox": [8, 8, 16, 32]}, {"image_id": 1, "bbox": [0, 0, 4, 6]}]
    root = write_coco(tmp_path, [{"id": 1, "height": 64, "width": 64}], annotations)
    path = root / "annotations" / "instances_val2017.json"
    payload = json.loads(path.read_text())
    payload["annotations"][1]["area"] = 99.0
    del payload["annotations"][0]["area"]
    path.write_text(json.dumps(payload))
    assert load_split_ground_truth(path, 64, 64).areas.tolist() == [16 * 32, 99.0]
    payload["annotations"][0]["bbox"] = [8, 8, 16, float("nan")]
    path.write_text(json.dumps(payload))
    with pytest.raises(DataError, match=r"annotations\[0\] in .*instances_val2017\.json has no "
                                        r"finite \[x, y, w, h\] bbox"):
        load_split_ground_truth(path, 64, 64)
