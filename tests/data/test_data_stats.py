"""Box statistics: exact answers on a hand-made file, COCO-likeness of the generator."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from atss_bench.data.stats import box_stats, compare_stats
from atss_bench.errors import DataError

GROUPS = ("rel size ", "rel small", "COCO ", "aspect w/h ")


def _group_sums(stats: dict[str, float]) -> dict[str, float]:
    sums = {"rel size": 0.0, "rel sml": 0.0, "COCO sml": 0.0, "aspect": 0.0}
    for key, value in stats.items():
        if key.startswith("rel size ") and key != "rel size median":
            sums["rel size"] += value
        elif key in ("rel small", "rel medium", "rel large"):
            sums["rel sml"] += value
        elif key.startswith("COCO "):
            sums["COCO sml"] += value
        elif key.startswith("aspect w/h ") and not key.endswith(("min", "max")):
            sums["aspect"] += value
    return sums


def test_exact_statistics_of_a_hand_made_file(tmp_path: Path) -> None:
    # Two 100 x 100 images (side 100): relative size = sqrt(w * h) / 100.
    anns = [  # bbox, area, iscrowd
        ([0, 0, 10, 10], 100.0, 0),  # rel 0.1, aspect 1, COCO small
        ([0, 0, 40, 10], 400.0, 0),  # rel 0.2, aspect 4
        ([0, 0, 20, 80], 1600.0, 0),  # rel 0.4, aspect 0.25, COCO medium
        ([0, 0, 2, 2], 4.0, 0),  # rel 0.02, aspect 1
        ([0, 0, 50, 50], 2500.0, 1),  # crowd: not an object
    ]
    payload = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100},
                   {"id": 3, "width": 100, "height": 100}],
        "annotations": [{"id": i, "image_id": 1 if i < 3 else 2, "category_id": 1, "bbox": b,
                         "area": a, "iscrowd": c} for i, (b, a, c) in enumerate(anns)],
        "categories": [{"id": 1, "name": "a"}, {"id": 4, "name": "b"}],
    }
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps(payload))
    stats = box_stats(path)
    assert (stats["images"], stats["categories"], stats["objects"], stats["crowd regions"]) == (
        3, 2, 4, 1)
    assert stats["objects/image mean"] == pytest.approx(4 / 3)
    assert (stats["objects/image median"], stats["objects/image max"]) == (1.0, 3)
    assert stats["images without objects"] == pytest.approx(1 / 3)
    assert stats["rel size 0-0.03"] == 0.25 and stats["rel size 0.1-0.173"] == 0.25
    assert stats["rel size 0.173-0.3"] == 0.25 and stats["rel size 0.3-0.5"] == 0.25
    assert (stats["rel small"], stats["rel medium"], stats["rel large"]) == (0.25, 0.25, 0.5)
    assert (stats["COCO small (area)"], stats["COCO medium (area)"]) == (0.75, 0.25)
    assert (stats["aspect w/h <1/3"], stats["aspect w/h 1-2"], stats["aspect w/h >=3"]) == (
        0.25, 0.5, 0.25)
    assert (stats["aspect w/h min"], stats["aspect w/h max"]) == (0.25, 4.0)
    assert _group_sums(stats) == pytest.approx({k: 1.0 for k in _group_sums(stats)})


def test_generator_is_coco_like(mini_root: Path) -> None:
    """Targets measured on COCO val2017-like data (coco-tiny): relative size, aspect, counts."""
    stats = box_stats(mini_root / "annotations" / "instances_val2017.json")
    assert _group_sums(stats) == pytest.approx({k: 1.0 for k in _group_sums(stats)})
    assert stats["rel size median"] == pytest.approx(0.10, abs=0.02)
    assert stats["rel small"] == pytest.approx(0.30, abs=0.08)
    assert stats["rel medium"] == pytest.approx(0.38, abs=0.08)
    assert stats["rel large"] == pytest.approx(0.31, abs=0.08)
    near_square = stats["aspect w/h 1/2-1"] + stats["aspect w/h 1-2"]
    assert near_square == pytest.approx(0.64, abs=0.08)
    assert stats["aspect w/h <1/3"] + stats["aspect w/h >=3"] == pytest.approx(0.13, abs=0.06)
    assert 5.5 <= stats["objects/image mean"] <= 9.0
    assert stats["objects/image median"] < stats["objects/image mean"]  # a long tail
    assert 0 < stats["images without objects"] <= 0.05 and stats["crowd regions"] >= 1
    assert stats["categories"] == 8


def test_compare_stats_is_a_printable_table(mini_root: Path, tmp_path: Path) -> None:
    frame = compare_stats(mini_root, mini_root / "annotations" / "instances_train2017.json")
    assert isinstance(frame, pd.DataFrame) and frame.index.name == "statistic"
    assert list(frame.columns) == ["mini-coco", "instances_train2017.json"]
    assert frame.loc["images"].tolist() == [80, 24]
    assert "rel small" in frame.index and "aspect w/h >=3" in frame.index
    same = compare_stats(mini_root, mini_root)
    assert list(same.columns) == ["mini-coco (a)", "mini-coco (b)"]
    with pytest.raises(DataError, match="not found"):
        compare_stats(mini_root, tmp_path)


def test_real_coco_tiny_statistics(coco_tiny_root: Path) -> None:
    stats = box_stats(coco_tiny_root / "annotations" / "instances_val2017.json")
    assert (stats["images"], stats["categories"], stats["objects"], stats["crowd regions"]) == (
        80, 80, 804, 11)
    assert _group_sums(stats) == pytest.approx({k: 1.0 for k in _group_sums(stats)})
