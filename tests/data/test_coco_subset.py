"""write_coco_subset: a smaller dataset in the same layout that loads and keeps annotations."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from atss_bench.data.coco import CocoDetection, load_coco
from atss_bench.data.subset import write_coco_subset
from atss_bench.errors import DataError


def _load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def _check_round_trip(source: Path, subset: Path, split: str, num_images: int) -> set[int]:
    original, small = _load(source, split), _load(subset, split)
    ids = {image["id"] for image in small["images"]}
    assert len(ids) == num_images and small["categories"] == original["categories"]
    assert small["annotations"] == [a for a in original["annotations"] if a["image_id"] in ids]
    assert sorted(p.name for p in (subset / split).iterdir()) == sorted(
        image["file_name"] for image in small["images"])
    for image in small["images"]:
        assert (subset / split / image["file_name"]).read_bytes() == (
            source / split / image["file_name"]).read_bytes()
    assert len(load_coco(subset / "annotations" / f"instances_{split}.json").imgs) == num_images
    assert len(CocoDetection(subset, split, train=False)) == num_images
    return ids


def test_subset_round_trip_on_mini(mini_root: Path, tmp_path: Path) -> None:
    out = write_coco_subset(mini_root, "val2017", 7, tmp_path / "a", seed=1)
    ids = _check_round_trip(mini_root, out, "val2017", 7)
    write_coco_subset(mini_root, "train2017", 5, out, seed=1)  # a second split beside the first
    _check_round_trip(mini_root, out, "train2017", 5)
    again = write_coco_subset(mini_root, "val2017", 7, tmp_path / "b", seed=1)
    assert {i["id"] for i in _load(again, "val2017")["images"]} == ids
    other = write_coco_subset(mini_root, "val2017", 7, tmp_path / "c", seed=2)
    assert {i["id"] for i in _load(other, "val2017")["images"]} != ids
    assert sorted(p.name for p in out.iterdir()) == ["annotations", "train2017", "val2017"]


def test_subset_refuses_bad_requests(mini_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot take 81 images from val2017: it has 80"):
        write_coco_subset(mini_root, "val2017", 81, tmp_path / "x")
    with pytest.raises(DataError, match="is the source dataset"):
        write_coco_subset(mini_root, "val2017", 3, mini_root)
    with pytest.raises(DataError, match="not found under"):
        write_coco_subset(tmp_path, "val2017", 3, tmp_path / "y")
    out = write_coco_subset(mini_root, "val2017", 3, tmp_path / "z")
    with pytest.raises(DataError, match="already exists"):
        write_coco_subset(mini_root, "val2017", 4, out)
    write_coco_subset(mini_root, "val2017", 4, out, overwrite=True)
    _check_round_trip(mini_root, out, "val2017", 4)


def test_subset_of_real_coco_tiny(coco_tiny_root: Path, tmp_path: Path) -> None:
    out = write_coco_subset(coco_tiny_root, "val2017", 10, tmp_path / "real", seed=0)
    _check_round_trip(coco_tiny_root, out, "val2017", 10)


def test_subset_says_when_the_annotation_file_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    os.mkfifo(tmp_path / "annotations" / "instances_val2017.json")
    with pytest.raises(DataError, match="instances_val2017.json is not a regular file under"):
        write_coco_subset(tmp_path, "val2017", 1, tmp_path / "out")
