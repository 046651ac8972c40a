"""Test-time augmentation through the engine: flipped passes map back exactly, size ranges are
measured in the pass's resized pixels, a perfect detector stays perfect under the official Table 8
merge, and a tiny real detector runs every pass (scales x flips) on CPU."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from atss_bench.data import CocoDetection
from atss_bench.engine.distributed import DistInfo
from atss_bench.engine import inference
from atss_bench.engine.inference import evaluate_model, predict_scale, to_coco_results
from atss_bench.model import build_detector
from tests.engine.conftest import tiny_config


class _BlobDetector(nn.Module):
    """One detection: the bounding box of the pixels whose first channel is > 0.5 (exactly
    mirrored when the image is); remembers the boxes it returned."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[float]] = []

    def forward(self, images, targets=None):
        outputs = []
        for image in images:
            ys, xs = (image[0] > 0.5).nonzero(as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            self.seen.append(box.tolist())
            outputs.append({"boxes": box[None], "scores": torch.tensor([0.9]),
                            "labels": torch.tensor([1])})
        return outputs


def _blob_batch() -> list:
    """One 20 x 30 image (resized from 40 x 60) with a blob over rows 5-9, columns 3-11."""
    image = torch.zeros(3, 20, 30)
    image[0, 5:10, 3:12] = 1.0
    target = {"image_id": 7, "size": (20, 30), "orig_size": (40, 60)}
    return [([image], [target])]


@pytest.mark.parametrize("flip", [False, True])
def test_a_flipped_pass_maps_back_exactly(flip: bool) -> None:
    model = _BlobDetector()
    dets = predict_scale(model, _blob_batch(), torch.device("cpu"), flip=flip)
    seen = [18.0, 5.0, 27.0, 10.0] if flip else [3.0, 5.0, 12.0, 10.0]  # x -> 30 - x
    assert model.seen == [seen]
    assert dets[7]["boxes"].tolist() == [[6.0, 10.0, 24.0, 20.0]]  # x 2, in the original image
    assert dets[7]["scores"].tolist() == pytest.approx([0.9]) and dets[7]["labels"].tolist() == [1]


@pytest.mark.parametrize("area_range, kept", [
    ((6.0, 7.0), 1),    # 36 < 9 x 5 = 45 < 49 in the resized pixels
    ((7.0, 8.0), 0),    # 45 <= 49
    ((13.0, 14.0), 0),  # would keep 18 x 10 = 180 in original pixels: not the official measure
])
def test_size_range_is_measured_in_the_pass_pixels(area_range: tuple[float, float],
                                                   kept: int) -> None:
    for flip in (False, True):
        dets = predict_scale(_BlobDetector(), _blob_batch(), torch.device("cpu"), flip=flip,
                             area_range=area_range)
        assert len(dets[7]["boxes"]) == len(dets[7]["scores"]) == len(dets[7]["labels"]) == kept


class _PerfectDetector(nn.Module):
    """The ground truth of whichever val image it is shown, plain or mirrored (torchvision's
    flip of the boxes), found by hashing the pixels; counts its forward calls."""

    def __init__(self, root: Path, sizes: list[int]) -> None:
        super().__init__()
        self.calls = 0
        self.answers: dict[str, dict[str, torch.Tensor]] = {}
        for size in sizes:
            dataset = CocoDetection(root, "val2017", train=False, min_size=size, max_size=4 * size)
            for image, target in (dataset[i] for i in range(len(dataset))):
                scores = torch.linspace(0.9, 0.8, len(target["labels"]))
                boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY",
                                                 canvas_size=tuple(image.shape[-2:]))
                for shown, shown_boxes in ((image, boxes), (image.flip(-1),
                                                            F.horizontal_flip(boxes))):
                    self.answers[self._key(shown)] = {
                        "boxes": shown_boxes.as_subclass(torch.Tensor),
                        "labels": target["labels"], "scores": scores}

    @staticmethod
    def _key(image: torch.Tensor) -> str:
        return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()

    def forward(self, images, targets=None):
        self.calls += 1
        return [self.answers[self._key(image)] for image in images]


def _gt_count(root: Path) -> int:
    return len(CocoDetection(root, "val2017", train=False, min_size=64).coco.dataset["annotations"])


def test_perfect_detector_stays_perfect_under_the_official_merge(square_coco: Path) -> None:
    """Flip + 3 scales + soft voting at 0.66: the copies of a box from 6 passes vote into one
    (soft copies score x (1 - IoU 1) = 0 and drop), so AP 100 with one detection per object."""
    config = tiny_config(
        data={"kind": "coco", "test_min_size": 80, "max_size": 200, "test_extra_sizes": [48, 96],
              "val_images": None},
        model={"test": {"aug": {"flip": True, "max_size": 400, "scale_ranges": [[0, 1e4]] * 2,
                                "merge": "soft_vote", "vote_thresh": 0.66,
                                "detections_per_img": 1000}}})
    model = _PerfectDetector(square_coco, [80, 48, 96])
    result = evaluate_model(model, square_coco, config.data, config.model.test, DistInfo())
    assert model.calls == 6  # 3 scales x (plain, flipped), one batch of 4 images each
    assert result.num_detections == _gt_count(square_coco)
    assert result.metrics["AP"] == pytest.approx(100.0)


def test_ranges_that_drop_every_extra_scale_box_leave_one_scale(square_coco: Path) -> None:
    """The extra scales' boxes all fall outside (0, 1) px: only the base scale is left."""
    config = tiny_config(
        data={"kind": "coco", "test_min_size": 80, "max_size": 200, "test_extra_sizes": [48, 96],
              "val_images": None},
        model={"test": {"aug": {"flip": True, "scale_ranges": [[0, 1]] * 2, "merge": "vote"}}})
    model = _PerfectDetector(square_coco, [80, 48, 96])
    result = evaluate_model(model, square_coco, config.data, config.model.test, DistInfo())
    assert model.calls == 6
    assert result.num_detections == _gt_count(square_coco)  # base plain + flipped voted together
    assert result.metrics["AP"] == pytest.approx(100.0)


def test_tiny_detector_runs_every_pass_and_merges(square_coco: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A real (untrained) detector: 3 scales x 2 flips, soft voting, the merge's top N per
    image; with every extra-scale box ranged out and NMS, exactly the single-scale detections."""
    merged: dict[int, dict[str, torch.Tensor]] = {}

    def record(image_id, dets, cat_ids):
        merged[image_id] = dets
        return to_coco_results(image_id, dets, cat_ids)

    monkeypatch.setattr(inference, "to_coco_results", record)
    sizes = {"kind": "coco", "test_min_size": 64, "max_size": 128, "test_extra_sizes": [48, 96],
             "val_images": None}
    torch.manual_seed(0)
    detector = {"test": {"score_thresh": 0.0, "detections_per_img": 20}}  # every pass: top 20
    model = build_detector(tiny_config(model=detector).model, num_classes=3)
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: seen.extend(tuple(i.shape) for i in args[0]))

    def run(extra_sizes: list[int], **aug: object) -> dict[int, dict[str, torch.Tensor]]:
        config = tiny_config(data={**sizes, "test_extra_sizes": extra_sizes},
                             model={"test": {**detector["test"], "aug": aug}})
        merged.clear()
        evaluate_model(model, square_coco, config.data, config.model.test, DistInfo())
        return dict(merged)

    voted = run([48, 96], flip=True, merge="soft_vote", detections_per_img=30)
    assert sorted(set(seen)) == [(3, 48, 48), (3, 64, 64), (3, 96, 96)] and len(seen) == 24
    assert [len(d["scores"]) for d in voted.values()] == [30] * 4  # 6 x 20 pooled, best 30 kept
    single = run([])
    assert [len(d["scores"]) for d in single.values()] == [20] * 4
    ranged_out = run([48, 96], scale_ranges=[[0, 1e-3], [0, 1e-3]])
    for image_id, dets in single.items():
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(ranged_out[image_id][key], dets[key]), key
        assert not torch.equal(voted[image_id]["scores"][:20], dets["scores"])
