"""One reader for COCO annotation files: hostile files are one DataError naming the file, valid
ones load unchanged; every reader (stats, subset, load_coco, evaluation, CLI) goes through it."""
from __future__ import annotations

import copy
import json
import os
import signal
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from pycocotools.coco import COCO
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.data import annotation_file
from atss_bench.data.annotation_file import annotation_area, load_annotation_file
from atss_bench.data.coco import load_coco
from atss_bench.data.stats import box_stats
from atss_bench.data.subset import write_coco_subset
from atss_bench.errors import DataError
from tests.data.tiny_coco import coco_payload, write_tiny_coco

DEEP = "[" * 100_000 + "]" * 100_000


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """Payload edit: ``path`` like ``images.0.width`` (``-`` deletes the key instead)."""
    def edit(payload: dict) -> None:
        *parents, last = path.split(".")
        node: Any = payload
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value == "-":
            del node[last]
        else:
            node[last] = value
    return edit


HOSTILE_PAYLOADS = {  # edit of the tiny val payload -> what the message says
    "images not a list": (_set("images", "x"), r"images in .* is a string, not a list"),
    "categories null": (_set("categories", None), r"categories in .* is null, not a list"),
    "no images key": (_set("images", "-"), r"no images in "),
    "image not an object": (_set("images", [5]), r"images\[0\] in .* is not an object"),
    "image without id": (_set("images.0.id", "-"), r"images\[0\] .* needs an integer id"),
    "bool image id": (_set("images.0.id", True), r"images\[0\] .* needs an integer id"),
    "float image id": (_set("images.0.id", 101.0), r"images\[0\] .* needs an integer id"),
    "id beyond int64": (_set("images.0.id", 2**63), r"images\[0\] .* needs an integer id"),
    "repeated image id": (_set("images.1.id", 101), r"images\[1\] .* repeats image id 101"),
    "file_name ../x": (_set("images.0.file_name", "../x"), r"images\[0\] .* a file_name inside"),
    "absolute file_name": (_set("images.0.file_name", "/etc/hostname"), r"a file_name inside"),
    "file_name a number": (_set("images.0.file_name", 7), r"a file_name inside"),
    "NaN width": (_set("images.0.width", float("nan")), r"needs a positive width and height"),
    "inf height": (_set("images.0.height", float("inf")), r"needs a positive width and height"),
    "zero width": (_set("images.0.width", 0), r"needs a positive width and height"),
    "string height": (_set("images.0.height", "30"), r"needs a positive width and height"),
    "category id string": (_set("categories.0.id", "3"), r"categories\[0\] .* no integer id"),
    "category name int": (_set("categories.1.name", 7), r"categories\[1\] .* not a string"),
    "repeated category": (_set("categories.1.id", 3), r"categories\[1\] .* repeats category"),
    "bbox of 3 numbers": (_set("annotations.1.bbox", [1, 2, 3]), r"no finite \[x, y, w, h\]"),
    "bbox with a string": (_set("annotations.1.bbox", [1, "2", 3, 4]), r"no finite \[x, y"),
    "bbox with NaN": (_set("annotations.1.bbox", [1, 2, float("nan"), 4]), r"no finite \[x, y"),
    "bbox with a bool": (_set("annotations.1.bbox", [1, 2, True, 4]), r"no finite \[x, y"),
    "bbox a string": (_set("annotations.1.bbox", "1,2,3,4"), r"no finite \[x, y"),
    "negative bbox w": (_set("annotations.1.bbox", [1, 2, -3, 4]), r"negative width or height"),
    "unknown image_id": (_set("annotations.1.image_id", 12345), r"unknown image or category"),
    "unknown category": (_set("annotations.1.category_id", 99), r"unknown image or category"),
    "annotation id bool": (_set("annotations.0.id", False), r"annotations\[0\] .* integer id"),
    "NaN area": (_set("annotations.0.area", float("nan")), r"area that is not a finite number"),
    "iscrowd 2": (_set("annotations.0.iscrowd", 2), r"iscrowd that is not 0 or 1"),
    "iscrowd true": (_set("annotations.0.iscrowd", True), r"iscrowd that is not 0 or 1"),
    "too deep inside": (_set("annotations.0.segmentation", json.loads("[" * 40 + "]" * 40)),
                        r"is not a COCO annotation file: nested more than 32 levels deep"),
}

HOSTILE_FILES = {  # raw file content -> what the message says
    "deep nesting": (DEEP.encode(), r"is not a COCO annotation file: nested too deeply"),
    "top-level list": (b"[]", r"is not a COCO annotation file: its top level is an array"),
    "top-level string": (b'"text"', r"its top level is a string, not an object"),
    "invalid JSON": (b'{"images": [', r"invalid JSON \(Expecting value at line 1 column 13\)"),
    "invalid UTF-8": (b'{"images": [], "x": "\xff\xfe"}', r"invalid UTF-8 at byte 21"),
    "0-byte file": (b"", r"is not a COCO annotation file: the file is empty"),
    "4301-digit id": (b'{"images": [{"id": ' + b"9" * 4301 + b"}]}", r"invalid JSON \(Exceed"),
}


@pytest.fixture()
def alarm() -> Iterator[None]:
    """Fail instead of hanging: SIGALRM after 5 s."""
    def on_alarm(signum, frame):
        raise TimeoutError("blocked reading the annotation file")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _write(tmp_path: Path, content: bytes | dict) -> Path:
    path = tmp_path / "instances_val2017.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE_PAYLOADS))
def test_a_hostile_payload_is_one_data_error_naming_the_file(tmp_path: Path, case: str) -> None:
    edit, match = HOSTILE_PAYLOADS[case]
    payload = copy.deepcopy(coco_payload("val2017"))  # its categories are a shared list
    edit(payload)
    path = _write(tmp_path, payload)
    with pytest.raises(DataError, match=match) as caught:
        load_annotation_file(path)
    assert str(path) in caught.value.message and "\n" not in str(caught.value)


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_a_hostile_file_is_one_data_error_naming_the_file(tmp_path: Path, case: str) -> None:
    content, match = HOSTILE_FILES[case]
    path = _write(tmp_path, content)
    with pytest.raises(DataError, match=match) as caught:
        load_annotation_file(path, "val2017")
    assert caught.value.message.startswith(f"split val2017: {path} is not a COCO annotation file")


@pytest.mark.parametrize("kind", ["fifo", "folder", "missing"])
def test_an_annotation_file_that_is_not_a_regular_file_never_blocks(tmp_path: Path, alarm,
                                                                   kind: str) -> None:
    path = tmp_path / "instances_val2017.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    why = "not found" if kind == "missing" else "is not a regular file"
    with pytest.raises(DataError) as caught:
        load_annotation_file(path)
    assert caught.value.message == f"annotation file {path} {why}"


def test_a_file_over_the_size_bound_is_refused_before_reading(tmp_path: Path,
                                                              monkeypatch) -> None:
    path = _write(tmp_path, coco_payload("val2017"))
    monkeypatch.setattr(annotation_file, "MAX_BYTES", path.stat().st_size - 1)
    with pytest.raises(DataError) as caught:
        load_annotation_file(path)
    assert caught.value.message == (f"annotation file {path} is larger than the "
                                    f"{path.stat().st_size - 1} bytes allowed")


def test_a_valid_file_loads_unchanged(tmp_path: Path) -> None:
    payload = coco_payload("val2017")
    payload["annotations"][0]["segmentation"] = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]
    payload["info"] = {"deep": {"but": {"not": ["too", ["deep"]]}}}
    path = _write(tmp_path, payload)
    assert load_annotation_file(path, "val2017", require_annotations=True) == payload
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a UTF-8 BOM is fine
    assert load_annotation_file(path) == payload


def test_empty_lists_are_valid_unless_annotations_are_required(tmp_path: Path) -> None:
    path = _write(tmp_path, {"images": [], "annotations": [], "categories": []})
    assert load_annotation_file(path)["images"] == []
    with pytest.raises(DataError) as caught:
        load_annotation_file(path, "val2017", require_annotations=True)
    assert caught.value.message == f"split val2017 has no images in {path}"
    image_info = coco_payload("val2017")
    del image_info["annotations"]  # COCO's image-info files (test-dev) have none
    path = _write(tmp_path, image_info)
    assert load_annotation_file(path) == image_info
    with pytest.raises(DataError, match=f"split val2017 has no annotations in {path}"):
        load_annotation_file(path, "val2017", require_annotations=True)


def test_file_names_may_be_absent_only_for_box_readers(tmp_path: Path) -> None:
    payload = coco_payload("val2017")
    del payload["images"][0]["file_name"]
    path = _write(tmp_path, payload)
    assert load_annotation_file(path, require_file_names=False) == payload
    with pytest.raises(DataError, match=r"images\[0\] .* a file_name inside the split folder"):
        load_annotation_file(path)
    payload["images"][0]["file_name"] = "../escape.jpg"
    path = _write(tmp_path, payload)
    with pytest.raises(DataError, match=r"images\[0\] .* a file_name inside the split folder"):
        load_annotation_file(path, require_file_names=False)


def test_annotation_area_falls_back_to_the_box_area() -> None:
    assert annotation_area({"bbox": [1, 2, 3.0, 4.0], "area": 7.5}) == 7.5
    assert annotation_area({"bbox": [1, 2, 3.0, 4.0]}) == 12.0


def test_load_coco_indexes_the_validated_file_like_pycocotools(hand_root: Path) -> None:
    path = hand_root / "annotations" / "instances_val2017.json"
    ours, theirs = load_coco(path), COCO(str(path))
    assert ours.dataset == theirs.dataset
    assert (ours.imgs, ours.anns, ours.cats) == (theirs.imgs, theirs.anns, theirs.cats)
    assert dict(ours.imgToAnns) == dict(theirs.imgToAnns)
    assert dict(ours.catToImgs) == dict(theirs.catToImgs)


@pytest.mark.parametrize("reader", ["load_coco", "box_stats", "write_coco_subset"])
@pytest.mark.parametrize("content", [DEEP.encode(), b'{"images": "x", "annotations": 5, '
                                                   b'"categories": [1]}'])
def test_every_reader_refuses_a_hostile_file(tmp_path: Path, reader: str, content: bytes) -> None:
    root = write_tiny_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2017.json"
    path.write_bytes(content)
    read = {"load_coco": lambda: load_coco(path), "box_stats": lambda: box_stats(path),
            "write_coco_subset": lambda: write_coco_subset(root, "val2017", 1, tmp_path / "o")}
    with pytest.raises(DataError, match=str(path)):
        read[reader]()
    assert not (tmp_path / "o").exists()


def test_stats_of_a_file_without_areas_use_the_box_area(tmp_path: Path) -> None:
    payload = coco_payload("val2017")  # boxes 20 x 15 = 300 px: COCO small
    with_area = box_stats(_write(tmp_path, payload))
    for ann in payload["annotations"]:
        del ann["area"]
    without = box_stats(_write(tmp_path, copy.deepcopy(payload)))
    assert without == with_area and without["COCO small (area)"] == 1.0


# Through the CLI: one line, exit 2, no traceback ------------------------------------------------

CLI_FILES = {"deep nesting": DEEP.encode(),
             "wrong types": b'{"images": "x", "annotations": 5, "categories": [1]}'}


@pytest.mark.parametrize("command", ["stats", "subset"])
@pytest.mark.parametrize("case", sorted(CLI_FILES))
def test_data_commands_on_a_hostile_file_print_one_line(tmp_path: Path, command: str,
                                                        case: str) -> None:
    root = write_tiny_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2017.json"
    path.write_bytes(CLI_FILES[case])
    args = {"stats": ["data", "stats", str(root), "--reference", str(root)],
            "subset": ["data", "subset", "--root", str(root), "--split", "val2017",
                       "--images", "1", "--out", str(tmp_path / "out")]}[command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert str(path) in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_an_annotation_without_area_gets_its_box_area_for_cocoeval(tmp_path: Path) -> None:
    """COCOeval reads every GT's area: a val file of boxes alone must not fail after training."""
    from atss_bench.engine.evaluate import available_evaluators, evaluate_coco

    payload = coco_payload("val2017")
    kept = payload["annotations"][0]
    del payload["annotations"][1]["area"]
    data = load_annotation_file(_write(tmp_path, copy.deepcopy(payload)))
    w, h = payload["annotations"][1]["bbox"][2:]
    assert data["annotations"][1]["area"] == w * h and data["annotations"][0]["area"] == \
        kept["area"]
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"],
                   "bbox": a["bbox"], "score": 0.9} for a in payload["annotations"]]
    for evaluator in available_evaluators():  # faster-coco-eval is optional
        metrics, _ = evaluate_coco(_write(tmp_path, payload), detections, evaluator=evaluator)
        assert metrics["AP"] == pytest.approx(100.0)
