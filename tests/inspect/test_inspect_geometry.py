"""The anchors inspect-assign uses are the ones training builds, and the GTs are training's."""
from __future__ import annotations

import pytest
import torch
from inspect_helpers import COCO_TINY
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from atss_bench.data import CocoDetection, generate_mini_coco, get_resize_size
from atss_bench.inspect import (
    anchors_for_padded_size,
    build_anchor_settings,
    feature_sizes,
    load_split_ground_truth,
    padded_size,
    resolve_rule_configs,
)
from atss_bench.inspect.settings import annotation_file
from atss_bench.model import build_detector


def test_padded_size():
    assert padded_size(192, 287, 32) == (192, 288)
    assert padded_size(800, 1066, 32) == (800, 1088)
    assert padded_size(5, 7, 1) == (5, 7)


def test_anchors_match_a_real_detector():
    """Feature maps of the detector on padded inputs have ceil(side / stride) cells, and its
    anchors for them are ours, bit for bit."""
    config = resolve_rule_configs("mini", ["atss"], {"model.backbone.weights": "none"})["atss"]
    model = build_detector(config.model, num_classes=2).eval()
    settings = build_anchor_settings(config.model)
    assert settings == model.anchor_settings
    for padded in [(96, 160), (224, 96)]:  # P6 / P7 round up: 96 / 64, 96 / 128
        with torch.no_grad():
            features = model.fpn(model.backbone(torch.zeros(1, 3, *padded)))
        sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        assert sizes == feature_sizes(padded, settings.strides)
        expected, _ = model.anchors_per_level(sizes, torch.device("cpu"))
        ours = anchors_for_padded_size(settings, padded)
        assert torch.equal(ours.anchors, torch.cat(expected))
        assert ours.num_anchors_per_level == [len(a) for a in expected]
        assert ours.levels.tolist() == [i for i, a in enumerate(expected) for _ in range(len(a))]


def _check_ground_truth(root, min_size, max_size, decoded):
    """Our boxes equal CocoDetection's targets after the evaluation resize: all images through
    load_target + the transform's box resize, and ``decoded`` images through __getitem__."""
    gt = load_split_ground_truth(annotation_file(root, "val2017"), min_size, max_size)
    dataset = CocoDetection(root, "val2017", train=False, min_size=min_size, max_size=max_size)
    assert list(dataset.ids) == gt.image_ids.tolist()
    for position, image_id in enumerate(dataset.ids):
        height, width = (int(v) for v in gt.orig_sizes[position])
        boxes, _ = dataset.load_target(image_id, height, width)
        size = get_resize_size(height, width, min_size, max_size)
        assert tuple(gt.sizes[position]) == size
        if size != (height, width):
            boxes = F.resize(tv_tensors.BoundingBoxes(boxes, format="XYXY",
                                                      canvas_size=(height, width)), list(size))
        ours = gt.boxes[gt.gt_offsets[position]:gt.gt_offsets[position + 1]]
        assert torch.equal(ours, boxes.as_subclass(torch.Tensor)), image_id
    for position in range(decoded):
        _, target = dataset[position]
        assert torch.equal(gt.boxes[gt.gt_offsets[position]:gt.gt_offsets[position + 1]],
                           target["boxes"])
    return gt


def test_ground_truth_is_the_training_target_on_mini_coco(tmp_path):
    root = generate_mini_coco(tmp_path / "mini", num_train=1, num_val=10)
    gt = _check_ground_truth(root, 192, 320, decoded=10)
    assert gt.num_gt > 30


@pytest.mark.skipif(not COCO_TINY.is_dir(), reason=f"no real COCO sample at {COCO_TINY} "
                                                   "(set ATSS_BENCH_TEST_COCO)")
def test_ground_truth_is_the_training_target_on_coco_tiny():
    gt = _check_ground_truth(COCO_TINY, 800, 1333, decoded=2)
    assert gt.num_gt > 100
