"""Test-time augmentation pieces with exact answers: box voting (by hand and against a plain
re-statement of the official soft_bbox_vote loop), size ranges, flip un-mapping, the official
Table 8 scales, and the config checks of ``model.test.aug``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from atss_bench.config import DataConfig, ExperimentConfig
from atss_bench.config import TestAugConfig as AugConfig
from atss_bench.config import TestConfig as InferenceConfig
from atss_bench.engine.tta import (EvalScale, MergeSettings, build_merge_settings,
                                   build_test_scales, filter_by_area, merge_detections,
                                   unflip_boxes, vote_boxes)
from atss_bench.errors import ConfigError
from atss_bench.overrides import apply_overrides, default_tree, validate_config

OFFICIAL_SCALES = [400, 500, 600, 640, 700, 900, 1000, 1100, 1200, 1300, 1400, 1800]
OFFICIAL_RANGES = [(96, 10000), (96, 10000), (64, 10000), (64, 10000), (64, 10000), (0, 10000),
                   (0, 10000), (0, 256), (0, 256), (0, 192), (0, 192), (0, 96)]

# Class 0: A (seed), B (IoU 100/120 with A), F (a copy of A), C (IoU 0.5 with A: its own group).
# Class 1: E on top of A (another class never votes with A), D elsewhere.
BOXES = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 12], [0, 0, 10, 10], [0, 0, 10, 20],
                      [0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
SCORES = torch.tensor([0.9, 0.6, 0.2, 0.3, 0.8, 0.5])
LABELS = torch.tensor([0, 0, 0, 0, 1, 1])
VOTED_A = [0.0, 0.0, 10.0, (0.9 * 10 + 0.6 * 12 + 0.2 * 10) / 1.7]  # score-weighted mean


def test_box_voting_by_hand() -> None:
    out = vote_boxes(BOXES, SCORES, LABELS, vote_thresh=0.66)
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8, 0.5, 0.3])
    assert out["labels"].tolist() == [0, 1, 1, 0]
    assert out["boxes"][0].tolist() == pytest.approx(VOTED_A, rel=1e-6)
    assert out["boxes"][1:].tolist() == BOXES[[4, 5, 3]].tolist()  # groups of one: unchanged


def test_soft_box_voting_by_hand() -> None:
    """Soft voting also keeps B at 0.6 x (1 - 5/6) = 0.1; F (0.2 x (1 - 1) = 0) falls below the
    0.05 threshold, as the seed's own copy does in the official code."""
    out = vote_boxes(BOXES, SCORES, LABELS, vote_thresh=0.66, soft_score_thresh=0.05)
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8, 0.5, 0.3, 0.1])
    assert out["labels"].tolist() == [0, 1, 1, 0, 0]
    assert out["boxes"][0].tolist() == pytest.approx(VOTED_A, rel=1e-6)
    assert out["boxes"][4].tolist() == [0.0, 0.0, 10.0, 12.0]


def test_voting_threshold_is_inclusive() -> None:
    """Official: members have IoU >= VOTE_TH. B has IoU 5/6 with A: at 5/6 it votes, above not."""
    two = {"boxes": BOXES[:2], "scores": SCORES[:2], "labels": LABELS[:2]}
    iou = 100.0 / 120.0
    joined = vote_boxes(two["boxes"], two["scores"], two["labels"], vote_thresh=iou - 1e-6)
    apart = vote_boxes(two["boxes"], two["scores"], two["labels"], vote_thresh=iou + 1e-6)
    assert len(joined["scores"]) == 1 and len(apart["scores"]) == 2


def _official_soft_vote(dets: np.ndarray, thresh: float, score_th: float) -> np.ndarray:
    """The official single-class soft_bbox_vote loop, restated plainly (continuous IoU instead
    of its +1 pixel convention): rows (x0, y0, x1, y1, score) -> merged rows by score."""
    dets = dets[np.argsort(-dets[:, 4], kind="stable")]
    out = []
    while len(dets):
        x0 = np.maximum(dets[0, 0], dets[:, 0])
        y0 = np.maximum(dets[0, 1], dets[:, 1])
        x1 = np.minimum(dets[0, 2], dets[:, 2])
        y1 = np.minimum(dets[0, 3], dets[:, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        area = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
        iou = inter / (area[0] + area - inter)
        members = iou >= thresh
        group, group_iou, dets = dets[members], iou[members], dets[~members]
        if len(group) == 1:
            out.append(group)
            continue
        soft = group.copy()
        soft[:, 4] *= 1 - group_iou
        voted = np.zeros((1, 5))
        voted[0, :4] = (group[:, :4] * group[:, 4:]).sum(0) / group[:, 4].sum()
        voted[0, 4] = group[:, 4].max()
        out.extend([voted, soft[soft[:, 4] >= score_th]])
    merged = np.concatenate(out)
    return merged[np.argsort(-merged[:, 4], kind="stable")]


@pytest.mark.parametrize("seed", range(5))
def test_soft_voting_matches_the_official_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, 80, (4, 2))
    dets = []
    for cx, cy in centres:  # clusters of jittered boxes, as several test passes give
        for _ in range(int(rng.integers(1, 8))):
            w, h = rng.uniform(15, 30, 2)
            jx, jy = rng.normal(0, 2, 2)
            dets.append([cx + jx - w / 2, cy + jy - h / 2, cx + jx + w / 2, cy + jy + h / 2,
                         rng.uniform(0.05, 1.0)])
    dets = np.array(dets)
    expected = _official_soft_vote(dets, 0.66, 0.05)
    out = vote_boxes(torch.tensor(dets[:, :4]), torch.tensor(dets[:, 4]),
                     torch.zeros(len(dets), dtype=torch.int64), 0.66, soft_score_thresh=0.05)
    assert out["scores"].numpy() == pytest.approx(expected[:, 4], abs=1e-9)
    assert out["boxes"].numpy() == pytest.approx(expected[:, :4], abs=1e-9)


def test_voting_nothing_and_a_degenerate_box() -> None:
    empty = vote_boxes(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.66)
    assert [len(v) for v in empty.values()] == [0, 0, 0]
    line = torch.tensor([[5.0, 0.0, 5.0, 10.0]])  # zero area: IoU with itself is NaN
    out = vote_boxes(line, torch.tensor([0.7]), torch.tensor([2]), 0.66, 0.05)
    assert out["boxes"].tolist() == line.tolist() and out["scores"].tolist() == pytest.approx([0.7])


def test_merge_keeps_the_best_and_uses_the_chosen_merge() -> None:
    one = {"boxes": BOXES[:3], "scores": SCORES[:3], "labels": LABELS[:3]}
    two = {"boxes": BOXES[3:], "scores": SCORES[3:], "labels": LABELS[3:]}
    nms = merge_detections([one, two], MergeSettings("nms", nms_thresh=0.6, detections_per_img=3))
    assert nms["scores"].tolist() == pytest.approx([0.9, 0.8, 0.5])  # B, F suppressed by A
    soft = merge_detections([one, two], MergeSettings("soft_vote", detections_per_img=100))
    assert soft["scores"].tolist() == pytest.approx([0.9, 0.8, 0.5, 0.3, 0.1])
    vote = merge_detections([one], MergeSettings("vote", detections_per_img=2))
    assert vote["scores"].tolist() == pytest.approx([0.9])  # voted even for a single pass
    assert merge_detections([one], MergeSettings("nms")) is one  # the detector's own output


def test_size_range_is_exclusive_and_in_squared_pixels() -> None:
    boxes = torch.tensor([[0, 0, 8, 8], [0, 0, 8, 9], [0, 0, 16, 16], [0, 0, 17, 16]],
                         dtype=torch.float32)  # areas 64, 72, 256, 272
    dets = {"boxes": boxes, "scores": torch.tensor([0.1, 0.2, 0.3, 0.4]),
            "labels": torch.tensor([0, 1, 2, 3])}
    kept = filter_by_area(dets, (8.0, 16.0))  # 64 < area < 256
    assert kept["labels"].tolist() == [1]
    assert kept["boxes"].tolist() == [[0.0, 0.0, 8.0, 9.0]]
    assert filter_by_area(dets, (0.0, 10000.0))["labels"].tolist() == [0, 1, 2, 3]


def test_unflip_is_the_mirror_image() -> None:
    boxes = torch.tensor([[2.0, 3.0, 7.5, 9.0], [0.0, 0.0, 30.0, 4.0]])
    back = unflip_boxes(boxes, 30)
    assert back.tolist() == [[22.5, 3.0, 28.0, 9.0], [0.0, 0.0, 30.0, 4.0]]
    assert torch.equal(unflip_boxes(back, 30), boxes)


def test_official_table8_scales_caps_and_ranges() -> None:
    data = DataConfig(test_min_size=800, max_size=1333, test_extra_sizes=OFFICIAL_SCALES)
    aug = AugConfig(flip=True, max_size=3000, scale_ranges=OFFICIAL_RANGES)
    scales = build_test_scales(data, aug)
    assert scales[0] == EvalScale(800, 1333, None)  # the identity pass keeps every box
    assert [(s.min_size, s.max_size) for s in scales[1:]] == [
        (s, 1333 if s < 800 else 3000) for s in OFFICIAL_SCALES]
    assert [s.area_range for s in scales[1:]] == [tuple(map(float, r)) for r in OFFICIAL_RANGES]


def test_default_scales_keep_the_growing_cap_and_no_ranges() -> None:
    data = DataConfig(test_min_size=800, max_size=1333, test_extra_sizes=[400, 800, 900])
    scales = build_test_scales(data, AugConfig())
    assert scales == [EvalScale(800, 1333), EvalScale(400, 1333), EvalScale(900, 1500)]


def test_merge_settings_from_config() -> None:
    test = InferenceConfig(score_thresh=0.1, nms_thresh=0.5, detections_per_img=100,
                      aug={"merge": "soft_vote", "vote_thresh": 0.7, "detections_per_img": 1000})
    assert build_merge_settings(test) == MergeSettings("soft_vote", 0.5, 0.7, 0.1, 1000)
    assert build_merge_settings(InferenceConfig()).detections_per_img == 100


def _config(**overrides: object) -> ExperimentConfig:
    return validate_config(apply_overrides(default_tree(), overrides, "t"), "t")


@pytest.mark.parametrize("overrides, words", [
    ({"data.test_extra_sizes": [400, 500], "model.test.aug.scale_ranges": [[0, 96]]},
     "1 ranges for 2 data.test_extra_sizes"),
    ({"data.test_extra_sizes": [400, 400], "model.test.aug.scale_ranges": [[0, 96], [0, 64]]},
     "must be distinct"),
    ({"data.test_extra_sizes": [800], "model.test.aug.scale_ranges": [[0, 96]]},
     "differ from data.test_min_size"),
    ({"data.test_extra_sizes": [400], "model.test.aug.scale_ranges": [[96, 96]]},
     "lo must be below hi"),
    ({"data.test_extra_sizes": [400], "model.test.aug.scale_ranges": [[-1, 96]]},
     "greater than or equal to 0"),
    ({"data.test_extra_sizes": [400], "model.test.aug.scale_ranges": [[0, ".nan"]]},
     "model.test.aug.scale_ranges"),
    ({"model.test.aug.merge": "wbf"}, "model.test.aug.merge"),
    ({"model.test.aug.vote_thresh": 1.5}, "model.test.aug.vote_thresh"),
    ({"model.test.aug.max_size": 0}, "model.test.aug.max_size"),
    ({"model.test.aug.flips": True}, "flips"),
])
def test_bad_test_aug_settings_are_config_errors(overrides: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _config(**overrides)


def test_each_aug_setting_changes_the_run_id_and_defaults_do_not() -> None:
    from atss_bench.config import config_hash

    base = config_hash(_config(**{"data.test_extra_sizes": [400]}))
    assert config_hash(_config(**{"data.test_extra_sizes": [400],
                                  "model.test.aug": AugConfig().model_dump()})) == base
    for key, value in {"flip": True, "max_size": 3000, "scale_ranges": [[0, 96]],
                       "merge": "vote", "vote_thresh": 0.5, "detections_per_img": 1000}.items():
        changed = _config(**{"data.test_extra_sizes": [400], f"model.test.aug.{key}": value})
        assert config_hash(changed) != base, key
