"""Bad data fails before training, naming the split or the file; a good dataset is checked once."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from atss_bench.data import BadImageError, CocoDetection, collate_detection
from atss_bench.data.preflight import preflight_dataset
from atss_bench.errors import DataError
from atss_bench.job.runner import failure_reason
from tests.data.tiny_coco import coco_payload, write_annotations, write_tiny_coco

SPLITS = ["train2017", "val2017"]


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ATSS_BENCH_CACHE", str(tmp_path / "cache"))
    return write_tiny_coco(tmp_path / "coco")


def check(root: Path, fingerprint: str = "0" * 16) -> None:
    preflight_dataset(root, SPLITS, fingerprint)


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_a_good_dataset_passes_and_is_checked_once(root: Path) -> None:
    check(root)
    (root / "val2017" / "c.jpg").unlink()
    check(root)  # same fingerprint and folder: remembered, not checked again
    with pytest.raises(DataError, match=r"image .*val2017/c\.jpg listed in .* is missing"):
        check(root, "1" * 16)


def test_real_coco_tiny_passes(coco_tiny_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ATSS_BENCH_CACHE", str(tmp_path))
    start = time.monotonic()
    preflight_dataset(coco_tiny_root, SPLITS, "2" * 16)
    assert time.monotonic() - start < 2


def test_a_val_split_without_annotations_names_split_and_file(root: Path) -> None:
    write_annotations(root, "val2017", {**coco_payload("val2017"), "annotations": []})
    with pytest.raises(DataError) as caught:
        check(root)
    assert caught.value.message == (f"split val2017 has no annotations in "
                                    f"{root / 'annotations' / 'instances_val2017.json'}")


@pytest.mark.parametrize("key", ["categories", "images"])
def test_a_split_without_categories_or_images_is_refused(root: Path, key: str) -> None:
    payload = coco_payload("train2017")
    del payload[key]
    write_annotations(root, "train2017", payload)
    with pytest.raises(DataError, match=f"split train2017 has no {key} in .*instances_train2017"):
        check(root)


def test_a_missing_annotation_file_names_the_split(root: Path) -> None:
    (root / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(DataError, match=r"split val2017 has no annotation file: .*instances_"
                                        r"val2017\.json not found"):
        check(root)


@pytest.mark.parametrize("name, keep, why", [
    ("c.jpg", -40, "no JPEG end marker FFD9"),
    ("d.png", -12, "no PNG IEND chunk"),
    ("c.jpg", 0, "the file is empty"),
])
def test_a_truncated_image_is_named(root: Path, name: str, keep: int, why: str) -> None:
    path = root / "val2017" / name
    truncate(path, keep)
    with pytest.raises(DataError) as caught:
        check(root)
    assert caught.value.message == f"truncated image {path} (split val2017): {why}"


def test_trailing_padding_after_the_end_marker_is_fine(root: Path) -> None:
    path = root / "train2017" / "a.jpg"
    path.write_bytes(path.read_bytes() + b"\x00" * 200)
    check(root)


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink-to-nothing"])
def test_an_image_that_is_not_a_regular_file_is_refused_without_blocking(root: Path,
                                                                         kind: str) -> None:
    path = root / "val2017" / "d.png"
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(root / "nowhere.png")
    start = time.monotonic()
    with pytest.raises(DataError, match=r"image .*val2017/d\.png"):
        check(root)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("file_name", ["../train2017/a.jpg", "/etc/hostname", "", "a\x00.jpg", 7])
def test_file_names_outside_the_split_folder_are_refused(root: Path, file_name) -> None:
    payload = coco_payload("val2017")
    payload["images"][0]["file_name"] = file_name
    write_annotations(root, "val2017", payload)
    with pytest.raises(DataError, match=r"images\[0\] in .*instances_val2017\.json \(split "
                                        r"val2017\) needs an integer id and a file_name"):
        check(root)


@pytest.mark.parametrize("field, value, match", [
    ("category_id", 99, "names an unknown image or category"),
    ("image_id", 12345, "names an unknown image or category"),
    ("bbox", [1, 2, 3], "has no finite"),
    ("bbox", [1, 2, float("nan"), 4], "has no finite"),
    ("bbox", "1,2,3,4", "has no finite"),
])
def test_malformed_annotations_are_named(root: Path, field: str, value, match: str) -> None:
    payload = coco_payload("train2017")
    payload["annotations"][1][field] = value
    write_annotations(root, "train2017", payload)
    with pytest.raises(DataError, match=r"annotations\[1\] in .*instances_train2017\.json "
                                        r"\(split train2017\) " + match):
        check(root)


@pytest.mark.parametrize("text", ["{not json", "[" * 100_000, "[]", '"text"'])
def test_unreadable_annotation_files_are_one_data_error(root: Path, text: str) -> None:
    (root / "annotations" / "instances_val2017.json").write_text(text)
    with pytest.raises(DataError, match=r"split val2017: .*instances_val2017\.json"):
        check(root)


def test_a_failed_check_is_not_remembered(root: Path) -> None:
    truncate(root / "val2017" / "c.jpg", -40)
    for _ in range(2):
        with pytest.raises(DataError, match="truncated image"):
            check(root)


# --- decode errors while loading: the file is named, also from a DataLoader worker -------------

def test_a_corrupt_image_names_its_file_when_loaded(root: Path) -> None:
    path = root / "val2017" / "c.jpg"
    truncate(path, 200)  # past the header: opens, then fails to decode
    dataset = CocoDetection(root, "val2017", train=False, min_size=32, max_size=64)
    with pytest.raises(BadImageError, match=f"cannot decode image {path}: "):
        dataset[0]


def test_a_loader_worker_reraises_with_the_file_in_the_one_line_reason(root: Path) -> None:
    path = root / "val2017" / "c.jpg"
    truncate(path, 200)
    dataset = CocoDetection(root, "val2017", train=False, min_size=32, max_size=64)
    loader = DataLoader(dataset, batch_size=1, num_workers=1, collate_fn=collate_detection)
    with pytest.raises(BadImageError) as caught:
        next(iter(loader))
    reason = failure_reason(caught.value)
    assert reason.startswith(f"BadImageError: cannot decode image {path}: ")
    assert "\n" not in reason and "DataLoader worker process" not in reason


def test_bad_image_error_keeps_a_plain_message() -> None:
    assert BadImageError("cannot decode image x.jpg").message == "cannot decode image x.jpg"
    text = "Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback: no marker"
    assert BadImageError(text).message == text
    with pytest.raises(DataError):
        raise BadImageError(json.dumps({"x": 1}))
