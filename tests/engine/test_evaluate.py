"""COCO evaluation: pycocotools and faster-coco-eval agree; detections are mapped back to the
original image and to COCO category ids (a perfect detector scores AP 100, at one or several test
scales); zero detections give AP 0 without a crash."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from atss_bench.data import CocoDetection
from atss_bench.data.detections import perturbed_detections
from atss_bench.engine.distributed import DistInfo
from atss_bench.engine.evaluate import (STAT_NAMES, available_evaluators, evaluate_coco,
                                        resolve_evaluator)
from atss_bench.engine.inference import evaluate_model
from atss_bench.engine.tta import MergeSettings, merge_detections
from atss_bench.errors import ConfigError, DataError
from tests.engine.conftest import tiny_config

BOTH = pytest.mark.skipif(len(available_evaluators()) < 2,
                          reason="needs both pycocotools and faster-coco-eval installed")


def _assert_same_stats(a: dict[str, float], b: dict[str, float]) -> None:
    assert list(a) == list(b) == list(STAT_NAMES)
    for name in STAT_NAMES:
        if math.isnan(a[name]):
            assert math.isnan(b[name]), name
        else:
            assert abs(a[name] - b[name]) < 1e-4 * 100, name  # stats x100: 1e-4 before scaling


def _gt(root: Path) -> dict:
    return json.loads((root / "annotations" / "instances_val2017.json").read_text())


@BOTH
def test_evaluators_agree_on_coco_tiny(coco_tiny_root: Path) -> None:
    gt = _gt(coco_tiny_root)
    detections = perturbed_detections(gt)
    fast, fast_name = evaluate_coco(gt, detections, evaluator="faster_coco_eval")
    slow, slow_name = evaluate_coco(gt, detections, evaluator="pycocotools")
    assert (fast_name, slow_name) == ("faster_coco_eval", "pycocotools")
    _assert_same_stats(fast, slow)
    assert 20 < fast["AP50"] < 95  # a real, non-trivial score


@BOTH
def test_evaluators_agree_on_a_subset_with_missing_areas(square_coco: Path) -> None:
    gt = _gt(square_coco)
    detections = perturbed_detections(gt, seed=1)
    ids = [gt["images"][0]["id"], gt["images"][2]["id"]]
    fast, _ = evaluate_coco(gt, detections, image_ids=ids, evaluator="faster_coco_eval")
    slow, _ = evaluate_coco(gt, detections, image_ids=ids, evaluator="pycocotools")
    _assert_same_stats(fast, slow)
    assert math.isnan(fast["APl"])  # 64 px images have no large object: COCOeval's -1


@pytest.mark.parametrize("evaluator", available_evaluators())
def test_zero_detections_score_zero(square_coco: Path, evaluator: str) -> None:
    metrics, name = evaluate_coco(_gt(square_coco), [], evaluator=evaluator)
    assert name == evaluator
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0


@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, '{"images": "x"}'])
def test_a_hostile_gt_file_is_a_data_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "instances_val2017.json"
    path.write_text(content)
    with pytest.raises(DataError, match=str(path)):
        evaluate_coco(path, [])


def test_resolve_evaluator() -> None:
    assert resolve_evaluator("auto") == available_evaluators()[0]
    with pytest.raises(ConfigError):
        resolve_evaluator("detectron")


def test_merge_scales_is_classwise_nms() -> None:
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    a = {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
    b = {"boxes": box + 0.5, "scores": torch.tensor([0.8]), "labels": torch.tensor([0])}
    c = {"boxes": box, "scores": torch.tensor([0.7]), "labels": torch.tensor([1])}
    merged = merge_detections([a, b, c], MergeSettings("nms", 0.6, detections_per_img=100))
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.7])
    assert merged["labels"].tolist() == [0, 1]
    one = merge_detections([a, b, c], MergeSettings("nms", 0.6, detections_per_img=1))
    assert len(one["scores"]) == 1


class _PerfectDetector(nn.Module):
    """Returns the ground truth of whichever val image it is shown, in that image's (resized)
    coordinates, found by hashing the pixels: checks the engine's coordinate and label maps."""

    def __init__(self, root: Path, sizes: list[int]) -> None:
        super().__init__()
        self.answers: dict[str, dict[str, torch.Tensor]] = {}
        for size in sizes:
            dataset = CocoDetection(root, "val2017", train=False, min_size=size, max_size=4 * size)
            for image, target in (dataset[i] for i in range(len(dataset))):
                self.answers[self._key(image)] = {
                    "boxes": target["boxes"], "labels": target["labels"],
                    "scores": torch.linspace(0.9, 0.8, len(target["labels"]))}

    @staticmethod
    def _key(image: torch.Tensor) -> str:
        return hashlib.sha1(image.numpy().tobytes()).hexdigest()

    def forward(self, images, targets=None):
        return [self.answers[self._key(image)] for image in images]


@pytest.mark.parametrize("extra_sizes", [[], [48, 96]])
def test_perfect_detector_scores_100(square_coco: Path, extra_sizes: list[int]) -> None:
    config = tiny_config(data={"kind": "coco", "test_min_size": 80, "max_size": 200,
                               "test_extra_sizes": extra_sizes,
                               "val_images": None})
    model = _PerfectDetector(square_coco, [80, *extra_sizes])
    result = evaluate_model(model, square_coco, config.data, config.model.test, DistInfo())
    num_gt = len(_gt(square_coco)["annotations"])
    assert result.num_images == 4
    assert result.num_detections == num_gt  # duplicates across scales removed by NMS
    assert result.metrics["AP"] == pytest.approx(100.0)
    assert result.metrics["AR100"] == pytest.approx(100.0)
