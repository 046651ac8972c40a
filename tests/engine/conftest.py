"""Fixtures for the engine tests: tiny configs, a generated square-image COCO, coco-tiny.

Every run here is tiny (64 px images, a quarter-width ResNet-18, a few iterations) so the whole
folder stays well under the test budget on 2 CPU cores. Tests use one intra-op thread: for models
this small, a second OpenMP thread gains nothing and, on a machine shared with other jobs, spinning
threads slow every iteration down 10-100x.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from atss_bench.config import ExperimentConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
SQUARE_CATEGORY_IDS = (2, 5, 9)  # non-contiguous on purpose


def tiny_config(**sections: dict[str, Any]) -> ExperimentConfig:
    """A detector and schedule small enough for a CPU test; ``sections`` update the defaults."""
    tree: dict[str, Any] = {
        "data": {"kind": "mini", "min_size": [64], "max_size": 64, "test_min_size": 64,
                 "flip_prob": 0.5, "num_workers": 0, "val_images": 4,
                 "mini": {"seed": 0, "num_train": 12, "num_val": 4}},
        "model": {"backbone": {"name": "resnet18", "weights": "none", "frozen_stages": 0,
                               "norm": "bn", "width": 0.25},
                  "fpn": {"channels": 16, "min_level": 3, "max_level": 5},
                  "head": {"channels": 16, "num_convs": 1}},
        "train": {"images_per_batch": 4, "base_lr": 0.01, "warmup": "linear",
                  "warmup_factor": 0.1, "warmup_iters": 3, "steps": [6], "max_iter": 8,
                  "amp": False, "checkpoint_period": 3},
        "seed": 7,
    }
    for section, values in sections.items():
        node = tree.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                node[key] = {**node[key], **value}
            else:
                node[key] = value
    return ExperimentConfig.model_validate(tree)


def write_square_coco(root: Path, *, num_train: int = 16, num_val: int = 4, size: int = 64,
                      seed: int = 0) -> Path:
    """A COCO-layout dataset of ``size x size`` images with 1-3 flat-coloured shapes each.

    Every image has the same size, so batches of any split pad to the same shape (needed where a
    test compares 2 processes x 2 images with 1 process x 4: GroupNorm statistics and the number
    of padded anchors would otherwise differ).
    """
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for split, count, base in (("train2017", num_train, 1), ("val2017", num_val, 1000)):
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image_id = base + i
            canvas = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 80, 3)))
            draw = ImageDraw.Draw(canvas)
            for _ in range(int(rng.integers(1, 4))):
                label = int(rng.integers(0, len(SQUARE_CATEGORY_IDS)))
                w, h = (int(v) for v in rng.integers(size // 6, size // 2, 2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                colour = ((255, 60, 60), (60, 255, 60), (60, 60, 255))[label]
                (draw.rectangle if label != 1 else draw.ellipse)((x, y, x + w - 1, y + h - 1),
                                                                 fill=colour)
                annotations.append({"id": ann_id, "image_id": image_id, "iscrowd": 0,
                                    "category_id": SQUARE_CATEGORY_IDS[label], "area": w * h,
                                    "bbox": [x, y, w, h]})
                ann_id += 1
            name = f"{image_id:012d}.png"
            canvas.save(root / split / name)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        categories = [{"id": c, "name": f"c{c}"} for c in SQUARE_CATEGORY_IDS]
        payload = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(payload))
    return root


def single_thread_env() -> dict[str, str]:
    """Environment for test subprocesses: one thread, this checkout importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(autouse=True, scope="package")
def _engine_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For every engine test, module-scoped fixtures included: generated mini-COCOs go to a
    temporary cache (never ~/.cache), and one thread (``OMP_NUM_THREADS=1`` also tells the
    engine to leave the thread count alone). Restored afterwards."""
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATSS_BENCH_CACHE", str(tmp_path_factory.mktemp("atss-bench-cache")))
        patch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def square_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_square_coco(tmp_path_factory.mktemp("square") / "coco")

