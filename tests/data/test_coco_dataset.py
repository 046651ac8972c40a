"""CocoDetection, its transforms and errors, on hand-made, generated and real COCO data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from atss_bench.data.coco import (CocoDetection, coco_split_paths, collate_detection,
                                  resolve_data_root)
from atss_bench.data.transforms import (DetectionTransform, get_resize_size,
                                        map_boxes_to_original)
from atss_bench.errors import DataError


@pytest.mark.parametrize(("height", "width", "min_size", "max_size", "expected"), [
    (480, 640, 800, 1333, (800, 1066)),  # 640 * 800 / 480 = 1066.67, truncated
    (640, 480, 800, 1333, (1066, 800)),  # portrait
    (427, 640, 800, 1333, (800, 1199)),
    (100, 1000, 800, 1333, (133, 1330)),  # capped: round(1333 * 100 / 1000) = 133
    (240, 320, 240, 1000, (240, 320)),  # already the right size
    (100, 200, 50, 1000, (50, 100)),
])
def test_resize_rule_matches_maskrcnn_benchmark(height, width, min_size, max_size, expected):
    assert get_resize_size(height, width, min_size, max_size) == expected


def _by_id(dataset: CocoDetection):
    return {dataset.ids[i]: dataset[i] for i in range(len(dataset))}


def test_targets_resize_exactly_and_exclude_crowd_and_degenerate(hand_root: Path) -> None:
    dataset = CocoDetection(hand_root, "val2017", train=False, min_size=50, max_size=1000)
    assert dataset.ids == [11, 12, 13, 14, 15]  # evaluation keeps every image
    image, target = _by_id(dataset)[11]
    assert image.shape == (3, 50, 100) and image.dtype == torch.float32
    assert target["orig_size"] == (100, 200) and target["size"] == (50, 100)
    assert target["scale"] == (0.5, 0.5)
    # [10, 20, 30, 40] xywh -> [10, 20, 40, 60] -> x 0.5; [150, 50, 80, 80] clipped to the image.
    assert target["boxes"].tolist() == [[5.0, 10.0, 20.0, 30.0], [75.0, 25.0, 100.0, 50.0]]
    assert target["labels"].tolist() == [1, 2]  # category ids 5 and 90
    assert target["labels"].dtype == torch.int64 and target["image_id"] == 11
    assert image[:, 0, 0].tolist() == pytest.approx([200 / 255, 10 / 255, 10 / 255], abs=1e-6)
    _, only_crowd = _by_id(dataset)[15]
    assert only_crowd["boxes"].shape == (0, 4) and only_crowd["labels"].shape == (0,)


def test_flip_mirrors_boxes_exactly(hand_root: Path) -> None:
    dataset = CocoDetection(hand_root, "val2017", train=True, min_size=50, max_size=1000,
                            flip_prob=1.0)
    image, target = _by_id(dataset)[11]
    assert target["boxes"].tolist() == [[80.0, 10.0, 95.0, 30.0], [0.0, 25.0, 25.0, 50.0]]
    unflipped, _ = _by_id(CocoDetection(hand_root, "val2017", train=True, min_size=50,
                                        max_size=1000, flip_prob=0.0))[11]
    assert torch.equal(image, unflipped.flip(-1))
    evaluation = CocoDetection(hand_root, "val2017", train=False, min_size=50, max_size=1000,
                               flip_prob=1.0)  # no flip outside training
    assert _by_id(evaluation)[11][1]["boxes"].tolist()[0] == [5.0, 10.0, 20.0, 30.0]


def test_max_size_caps_the_longer_side(hand_root: Path) -> None:
    dataset = CocoDetection(hand_root, "val2017", train=False, min_size=100, max_size=200)
    image, target = _by_id(dataset)[14]  # 400 x 100: shorter side round(200 * 100 / 400) = 50
    assert image.shape == (3, 50, 200) and target["scale"] == (0.5, 0.5)
    assert target["boxes"].tolist() == [[0.0, 0.0, 200.0, 50.0]]


def test_multi_scale_draws_each_min_size(hand_root: Path) -> None:
    dataset = CocoDetection(hand_root, "val2017", train=True, min_size=[40, 60], max_size=1000)
    torch.manual_seed(0)
    heights = {dataset[0][0].shape[1] for _ in range(30)}
    assert heights == {40, 60}


def test_aspect_ratio_groups_follow_the_official_rule(hand_root: Path) -> None:
    dataset = CocoDetection(hand_root, "val2017", train=False, min_size=40, max_size=1000)
    # 200x100, 60x40 and 400x100 are wider than tall; the 40x40 and 50x50 squares go with the
    # portraits (bisect_right([1], h / w) is 1 at h / w == 1)
    assert dataset.aspect_ratio_groups() == [0, 0, 1, 0, 1]
    training = CocoDetection(hand_root, "val2017", train=True, min_size=40, max_size=1000)
    assert len(training.aspect_ratio_groups()) == len(training)  # one per kept image


def test_image_modes_become_rgb(hand_root: Path) -> None:
    dataset = CocoDetection(hand_root, "val2017", train=False, min_size=40, max_size=1000)
    for image_id, (image, _) in _by_id(dataset).items():
        assert image.shape[0] == 3, image_id
        assert 0.0 <= image.min() and image.max() <= 1.0
    gray, _ = _by_id(dataset)[12]
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])
    assert gray[0, 0, 0].item() == pytest.approx(77 / 255, abs=1e-6)


def test_training_removes_images_without_annotations(hand_root: Path) -> None:
    # 13 has none; 15 has only a crowd box, which maskrcnn-benchmark's rule keeps.
    assert CocoDetection(hand_root, "val2017", train=True).ids == [11, 12, 14, 15]
    assert CocoDetection(hand_root, "val2017", train=True,
                         remove_images_without_annotations=False).ids == [11, 12, 13, 14, 15]
    assert CocoDetection(hand_root, "val2017", train=False,
                         remove_images_without_annotations=True).ids == [11, 12, 14, 15]


def test_category_mapping_round_trips(hand_root: Path) -> None:
    dataset = CocoDetection(hand_root, "val2017", train=False)
    assert dataset.contiguous_to_cat_id == [2, 5, 90] and dataset.num_classes == 3
    assert dataset.cat_id_to_contiguous == {2: 0, 5: 1, 90: 2}
    assert dataset.class_names == ["c2", "c5", "c90"]


def test_mini_coco_targets(mini_root: Path) -> None:
    dataset = CocoDetection(mini_root, "val2017", train=False, min_size=256, max_size=384)
    coco = dataset.coco
    assert dataset.num_classes == 8 and len(dataset) == len(coco.imgs)
    total = 0
    for index in range(len(dataset)):
        image, target = dataset[index]
        anns = [a for a in coco.imgToAnns[target["image_id"]] if not a["iscrowd"]]
        total += len(target["boxes"])
        assert len(target["boxes"]) == len(anns)  # generator boxes are never degenerate
        cat_ids = sorted(dataset.contiguous_to_cat_id[label] for label in target["labels"])
        assert cat_ids == sorted(a["category_id"] for a in anns)
        original = map_boxes_to_original(target["boxes"], target["size"], target["orig_size"])
        expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                                 (a["bbox"] for a in anns)]).reshape(-1, 4)
        assert torch.allclose(original.sort(0).values, expected.sort(0).values, atol=1e-3)
        assert tuple(image.shape[1:]) == target["size"] == get_resize_size(
            *target["orig_size"], 256, 384)
    assert total == sum(1 for a in coco.dataset["annotations"] if not a["iscrowd"])
    assert any(a["iscrowd"] for a in coco.dataset["annotations"])


def test_collate_and_data_loader(mini_root: Path) -> None:
    dataset = CocoDetection(mini_root, "train2017", train=True, min_size=[224, 256],
                            max_size=384)
    images, targets = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate_detection)))
    assert len(images) == len(targets) == 3
    assert all(image.shape[1:] == target["size"] for image, target in zip(images, targets))


def test_missing_layout_is_a_data_error_naming_the_path(tmp_path: Path, hand_root: Path) -> None:
    with pytest.raises(DataError, match=f"data root {tmp_path / 'nowhere'} does not exist"):
        coco_split_paths(tmp_path / "nowhere", "val2017")
    with pytest.raises(DataError, match="annotations/instances_train2017.json not found") as info:
        CocoDetection(hand_root, "train2017", train=True)
    assert str(hand_root) in str(info.value) and "ATSS_BENCH_DATA" in str(info.value)
    (hand_root / "annotations" / "instances_test2017.json").write_text("{}")
    with pytest.raises(DataError, match="image directory test2017/ not found"):
        coco_split_paths(hand_root, "test2017")
    (hand_root / "test2017").mkdir()
    (hand_root / "annotations" / "instances_test2017.json").write_text("[1, 2")
    with pytest.raises(DataError, match="is not a COCO annotation file"):
        CocoDetection(hand_root, "test2017", train=False)
    (hand_root / "val2017" / "wide.png").unlink()
    dataset = CocoDetection(hand_root, "val2017", train=False)
    with pytest.raises(DataError, match="wide.png listed in the annotations is missing"):
        dataset[0]


def test_resolve_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ATSS_BENCH_DATA", raising=False)
    assert resolve_data_root(None) is None
    monkeypatch.setenv("ATSS_BENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_transform_keeps_empty_boxes_shaped() -> None:
    from PIL import Image
    image, boxes, flipped = DetectionTransform(32, 64, 1.0)(Image.new("RGB", (20, 10)),
                                                             torch.zeros(0, 4))
    assert image.shape == (3, 32, 64) and boxes.shape == (0, 4) and flipped


def test_real_coco_tiny(coco_tiny_root: Path) -> None:
    dataset = CocoDetection(coco_tiny_root, "val2017", train=False, min_size=320, max_size=512)
    assert len(dataset) == 80 and dataset.num_classes == 80
    assert dataset.contiguous_to_cat_id[0] == 1 and dataset.contiguous_to_cat_id[-1] == 90
    data = json.loads((coco_tiny_root / "annotations" / "instances_val2017.json").read_text())
    crowd_images = {a["image_id"] for a in data["annotations"] if a["iscrowd"]}
    image_id = sorted(crowd_images)[0]
    image, target = dataset[dataset.ids.index(image_id)]
    assert tuple(image.shape) == (3, *get_resize_size(*target["orig_size"], 320, 512))
    expected = [a for a in data["annotations"] if a["image_id"] == image_id and not a["iscrowd"]
                and min(a["bbox"][2:]) >= 1]
    assert len(target["boxes"]) == len(expected)
    total = sum(len(dataset[i][1]["boxes"]) for i in range(len(dataset)))
    assert total == 804  # 815 annotations, 11 of them crowd
