"""The synthetic mini-COCO generator: determinism, COCO validity, atomic writes, the cache."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from atss_bench.data import mini
from atss_bench.data.coco import load_coco
from atss_bench.data.mini import (CATEGORY_IDS, MiniCocoSpec, ensure_mini_coco,
                                  generate_mini_coco)
from atss_bench.errors import DataError

from .conftest import MINI_PARAMS

SMALL = {"num_train": 5, "num_val": 3, "short_side": (64, 96)}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_parameters_give_byte_identical_files(tmp_path: Path) -> None:
    first = _digests(generate_mini_coco(tmp_path / "a", seed=1, **SMALL))
    second = _digests(generate_mini_coco(tmp_path / "b", seed=1, **SMALL))
    assert first == second
    assert len(first) == 2 + 5 + 3 + 1  # two annotation files, 8 images, the marker
    other = _digests(generate_mini_coco(tmp_path / "c", seed=2, **SMALL))
    assert other.keys() == first.keys() and other != first


def test_layout_and_coco_validity(mini_root: Path) -> None:
    assert sorted(p.name for p in mini_root.iterdir()) == [
        "annotations", "mini_coco.json", "train2017", "val2017"]
    for split, count in (("train2017", MINI_PARAMS["num_train"]),
                         ("val2017", MINI_PARAMS["num_val"])):
        coco = load_coco(mini_root / "annotations" / f"instances_{split}.json")
        assert len(coco.imgs) == count == len(list((mini_root / split).iterdir()))
        assert sorted(coco.cats) == list(CATEGORY_IDS)
        assert list(CATEGORY_IDS) != list(range(1, len(CATEGORY_IDS) + 1))  # non-contiguous
        anns = coco.dataset["annotations"]
        assert {"id", "image_id", "category_id", "bbox", "area", "iscrowd",
                "segmentation"} <= set(anns[0])
        assert len({a["id"] for a in anns}) == len(anns)
        assert any(a["iscrowd"] == 1 for a in anns)
        assert any(not coco.imgToAnns[i] for i in coco.imgs)  # an image without objects


def test_boxes_areas_and_masks_agree(mini_root: Path) -> None:
    """bbox is the tight box of the visible mask, area its pixel count, inside the image."""
    coco = load_coco(mini_root / "annotations" / "instances_val2017.json")
    for ann in coco.dataset["annotations"][:150]:
        image = coco.imgs[ann["image_id"]]
        visible = coco.annToMask(ann)
        assert visible.shape == (image["height"], image["width"])
        rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
        x, y, w, h = ann["bbox"]
        assert [x, y, w, h] == [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]
        assert ann["area"] == visible.sum() == mask_utils.area(coco.annToRLE(ann))
        assert 0 <= x and x + w <= image["width"] and 0 <= y and y + h <= image["height"]


def test_images_match_their_records_and_one_is_grayscale(mini_root: Path) -> None:
    coco = load_coco(mini_root / "annotations" / "instances_val2017.json")
    modes = set()
    for image in coco.imgs.values():
        with Image.open(mini_root / "val2017" / image["file_name"]) as picture:
            assert picture.size == (image["width"], image["height"])
            assert 224 <= min(picture.size) <= 288
            modes.add(picture.mode)
    assert modes == {"RGB", "L"}


def test_existing_output_is_reused_refused_or_overwritten(tmp_path: Path) -> None:
    root = generate_mini_coco(tmp_path / "m", **SMALL)
    stamp = (root / "mini_coco.json").stat().st_mtime_ns
    assert generate_mini_coco(root, **SMALL) == root  # same parameters: untouched
    assert (root / "mini_coco.json").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="already exists"):
        generate_mini_coco(root, seed=9, **SMALL)
    generate_mini_coco(root, seed=9, overwrite=True, **SMALL)
    assert mini.read_marker(root)["spec"]["seed"] == 9


def test_killed_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = mini.build_split

    def build_then_die(spec, split, out_dir):
        if split == "val2017":
            raise KeyboardInterrupt
        return real_build(spec, split, out_dir)

    monkeypatch.setattr(mini, "build_split", build_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate_mini_coco(tmp_path / "m", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_bad_parameters_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown mini-COCO parameter.*num_imgs"):
        generate_mini_coco(tmp_path / "m", num_imgs=3)
    with pytest.raises(DataError, match="short_side"):
        MiniCocoSpec(short_side=(300, 200))
    assert MiniCocoSpec().digest() != MiniCocoSpec(seed=1).digest()


def _ensure(cache: str) -> str:
    return str(ensure_mini_coco(cache, **SMALL))


def test_ensure_generates_once_even_when_racing(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        roots = pool.map(_ensure, [cache, cache])
    assert roots[0] == roots[1]
    root = Path(roots[0])
    assert root.name == f"mini-coco-{MiniCocoSpec.from_params(**SMALL).digest()}"
    assert [p.name for p in Path(cache).iterdir() if p.is_dir()] == [root.name]  # no temp left
    assert _digests(root) == _digests(generate_mini_coco(tmp_path / "direct", **SMALL))
    assert ensure_mini_coco(cache, **SMALL) == root


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATSS_BENCH_CACHE", str(tmp_path))
    assert mini.default_cache_dir() == tmp_path
    monkeypatch.delenv("ATSS_BENCH_CACHE")
    assert mini.default_cache_dir() == Path(os.path.expanduser("~/.cache/atss-bench"))


def _colour_matches(root: Path, split: str = "val2017") -> tuple[int, int]:
    """(objects whose mean visible colour is nearest their own category's colour, objects)."""
    from atss_bench.data.shapes import category_colour

    coco = load_coco(root / "annotations" / f"instances_{split}.json")
    cat_ids = [c["id"] for c in coco.dataset["categories"]]
    palette = np.stack([category_colour(i, len(cat_ids)) for i in range(len(cat_ids))])
    hits = total = 0
    for image_id, info in coco.imgs.items():
        pixels = np.asarray(Image.open(root / split / info["file_name"]), np.float32)
        if pixels.ndim != 3:  # the grayscale images carry no colour
            continue
        for ann in coco.imgToAnns[image_id]:
            if ann["iscrowd"] or ann["area"] < 64:
                continue
            mean = pixels[mask_utils.decode(ann["segmentation"]).astype(bool)].mean(axis=0)
            nearest = int(np.argmin(((palette - mean) ** 2).sum(axis=1)))
            hits += cat_ids[nearest] == ann["category_id"]
            total += 1
    return hits, total


def test_objects_take_their_category_colour_unless_shape_only(mini_root: Path,
                                                              tmp_path: Path) -> None:
    hits, total = _colour_matches(mini_root)
    assert total > 100 and hits / total > 0.9  # JPEG and stripes blur it a little, no more
    shape_only = generate_mini_coco(tmp_path / "shape-only", **{**MINI_PARAMS,
                                                                 "category_hue": False})
    hits, total = _colour_matches(shape_only)
    assert total > 100 and hits / total < 0.3  # chance is 1/8
