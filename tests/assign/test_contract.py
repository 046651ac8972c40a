"""The contract checker: built-in rules and the example pass; each kind of breach is caught
on a minimal scene."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch

from atss_bench.assign.contract import (
    CHECKS,
    Scene,
    check_rule,
    coco_scenes,
    random_scenes,
)
from atss_bench.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
COCO = Path(os.environ.get("ATSS_BENCH_TEST_COCO", REPO.parent / "shared" / "data" / "coco-tiny"))
STRIDES = [8, 16, 32, 64, 128]
BUILTIN_PARAMS = {
    "max_iou": {},
    "fcos": {"strides": STRIDES, "scale_ranges": [[0, 64], [64, 128], [128, 256], [256, 512],
                                                  [512, float("inf")]]},
    "topk_scale": {"strides": STRIDES, "scale_ranges": [[0, 64], [64, 128], [128, 256],
                                                        [256, 512], [512, float("inf")]]},
    "atss": {},
    "task_aligned": {},
    "simota": {"strides": STRIDES},
}


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return random_scenes(2, seed=1, image_size=(160, 224))


@pytest.mark.parametrize("strategy", list(BUILTIN_PARAMS))
def test_every_builtin_rule_keeps_the_contract(strategy, scenes):
    report = check_rule(strategy, BUILTIN_PARAMS[strategy], scenes, cuda=False)
    assert report.passed, [(f.check, f.detail) for f in report.failures]
    assert report.checks == [name for name in CHECKS if name != "cpu/cuda agreement"]


@pytest.mark.skipif(not (COCO / "annotations" / "instances_val2017.json").is_file(),
                    reason="needs coco-tiny (ATSS_BENCH_TEST_COCO)")
def test_real_coco_boxes_make_scenes_and_atss_passes_on_them():
    real = coco_scenes(COCO / "annotations" / "instances_val2017.json", max_images=1)
    assert len(real) == 1 and real[0].gt_boxes.shape[0] >= 1
    assert "instances_val2017.json image" in real[0].source
    assert check_rule("atss", {}, real, cuda=False).passed


def test_the_example_rule_passes(scenes):
    report = check_rule(f"{REPO / 'examples' / 'my_rule.py'}:assign_atss_floor", {}, scenes,
                        cuda=False)
    assert report.passed, [(f.check, f.detail) for f in report.failures]


def test_the_broken_example_fails_on_an_image_without_gts(scenes):
    report = check_rule(f"{REPO / 'examples' / 'broken_rule.py'}:assign_nearest", {}, scenes,
                        cuda=False)
    assert [f.check for f in report.failures] == ["no positives without GTs"]
    (failure,) = report.failures
    assert failure.scene.gt_boxes.shape[0] == 0
    assert "with no GT, anchor 0 labelled 0" in failure.detail
    assert "0 GT(s)" in failure.scene.describe()


def _rule(tmp_path: Path, body: str) -> str:
    path = tmp_path / "rule_under_test.py"
    path.write_text("import torch\n\n" + textwrap.dedent(body))
    return f"{path}:fn"


@pytest.mark.parametrize("body, check, words", [
    ("""
     def fn(anchors, napl, gt_boxes):
         return torch.full((len(anchors),), -1, dtype=torch.int32)
     """, "runs, int64 [N] output", "torch.int32"),
    ("""
     def fn(anchors, napl, gt_boxes):
         out = torch.full((len(anchors),), -1, dtype=torch.int64)
         out[0] = len(gt_boxes)
         return out
     """, "label space", "anchor 0 labelled"),
    ("""
     def fn(anchors, napl, gt_boxes):
         gt_boxes += 1
         return torch.full((len(anchors),), -1, dtype=torch.int64)
     """, "inputs untouched", "gt_boxes"),
    ("""
     def fn(anchors, napl, gt_boxes):
         out = torch.full((len(anchors),), -1, dtype=torch.int64)
         if len(gt_boxes):
             out[torch.randint(len(anchors), (1,))] = 0
         return out
     """, "deterministic", "two calls differ"),
    ("""
     def fn(anchors, napl, gt_boxes):
         raise RuntimeError("boom")
     """, "runs, int64 [N] output", "raised RuntimeError: boom"),
])
def test_each_breach_is_reported(tmp_path, scenes, body, check, words):
    report = check_rule(_rule(tmp_path, body), {}, scenes, cuda=False)
    assert check in [f.check for f in report.failures]
    failure = next(f for f in report.failures if f.check == check)
    assert words in failure.detail


def test_the_failing_scene_is_shrunk_to_the_gts_that_matter(tmp_path, scenes):
    # Fails only when two GTs overlap: the minimal scene keeps two overlapping GTs.
    body = """
    from torchvision.ops import box_iou

    def fn(anchors, napl, gt_boxes):
        out = torch.full((len(anchors),), -1, dtype=torch.int64)
        iou = box_iou(gt_boxes, gt_boxes) - torch.eye(len(gt_boxes))
        if len(gt_boxes) > 1 and (iou > 0).any():
            out[0] = 99
        return out
    """
    overlapping = scenes[0]
    gts = torch.tensor([[0.0, 0, 50, 50], [100, 100, 120, 130], [10, 10, 60, 40],
                        [150, 10, 200, 60]])
    scene = Scene("hand-made", overlapping.image_size, overlapping.anchors,
                  overlapping.num_anchors_per_level, gts, torch.zeros(4, dtype=torch.int64),
                  overlapping.pred_scores, overlapping.pred_boxes)
    report = check_rule(_rule(tmp_path, body), {}, [scene], cuda=False)
    failure = next(f for f in report.failures if f.check == "label space")
    assert failure.scene.gt_boxes.tolist() == [[0.0, 0, 50, 50], [10, 10, 60, 40]]


def test_bad_params_and_bad_annotation_files_are_input_errors(tmp_path, scenes):
    with pytest.raises(ConfigError, match="unknown param 'k'"):
        check_rule("atss", {"k": 3}, scenes, cuda=False)
    bad = tmp_path / "instances_val2017.json"
    bad.write_text('{"images": 3}')
    with pytest.raises(DataError, match="not a readable COCO annotation file"):
        coco_scenes(bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_builtin_rules_agree_on_cpu_and_cuda(scenes):
    for strategy, params in BUILTIN_PARAMS.items():
        report = check_rule(strategy, params, scenes, cuda=True)
        assert report.passed, (strategy, [(f.check, f.detail) for f in report.failures])
