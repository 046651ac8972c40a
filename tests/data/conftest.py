"""Fixtures for the data tests: a small generated mini-COCO, a hand-made COCO with exact answers,
and the real coco-tiny (``$ATSS_BENCH_TEST_COCO``, default ``<repo>/../shared/data/coco-tiny``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from atss_bench.data.mini import generate_mini_coco

MINI_PARAMS: dict[str, Any] = {"seed": 3, "num_train": 24, "num_val": 80}


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated mini-COCO, shared by every data test (read-only)."""
    return generate_mini_coco(tmp_path_factory.mktemp("mini") / "mini-coco", **MINI_PARAMS)



# Hand-made dataset: every number below is checked exactly by the tests.
# Categories with non-contiguous, unsorted ids: contiguous labels follow the sorted ids 2, 5, 90.
HAND_CATEGORIES = [{"id": 90, "name": "c90"}, {"id": 5, "name": "c5"}, {"id": 2, "name": "c2"}]
HAND_IMAGES = [
    # id, file, width, height, PIL mode
    (11, "wide.png", 200, 100, "RGB"),
    (12, "gray.png", 60, 40, "L"),
    (13, "empty.png", 40, 40, "RGBA"),
    (14, "cmyk.jpg", 400, 100, "CMYK"),
    (15, "onlycrowd.png", 50, 50, "P"),
]
HAND_ANNOTATIONS = [
    # id, image_id, category_id, bbox xywh, iscrowd
    (1, 11, 5, [10, 20, 30, 40], 0),  # -> label 1, xyxy [10, 20, 40, 60]
    (2, 11, 90, [150, 50, 80, 80], 0),  # sticks out: clipped to [150, 50, 200, 100], label 2
    (3, 11, 2, [0, 0, 100, 100], 1),  # crowd: never a target
    (4, 11, 2, [5, 5, 0.5, 10], 0),  # degenerate (w < 1 px): dropped
    (5, 12, 2, [1, 2, 3, 4], 0),
    (6, 14, 5, [0, 0, 400, 100], 0),
    (7, 15, 2, [0, 0, 20, 20], 1),
]


def _segmentation(bbox: list[float]) -> list[list[float]]:
    x, y, w, h = bbox
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture()
def hand_root(tmp_path: Path) -> Path:
    root = tmp_path / "hand"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    for _, name, width, height, mode in HAND_IMAGES:
        colour: Any = {"RGB": (200, 10, 10), "L": 77, "RGBA": (1, 2, 3, 0),
                       "CMYK": (0, 255, 0, 0), "P": 3}[mode]
        Image.new(mode, (width, height), colour).save(root / "val2017" / name)
    payload = {
        "images": [{"id": i, "file_name": f, "width": w, "height": h}
                   for i, f, w, h, _ in HAND_IMAGES],
        "annotations": [{"id": a, "image_id": i, "category_id": c, "bbox": b, "iscrowd": crowd,
                         "area": b[2] * b[3], "segmentation": _segmentation(b)}
                        for a, i, c, b, crowd in HAND_ANNOTATIONS],
        "categories": HAND_CATEGORIES,
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(payload))
    return root
