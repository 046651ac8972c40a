"""Shared by tests/inspect: hand-made COCO folders and a plain per-image reference.

(tests/inspect has no __init__.py on purpose: as a package it would be named ``inspect`` and
shadow the standard library module; pytest imports these files by their unique names.)
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou

from atss_bench.assign import assign
from atss_bench.boxes import generate_anchors

REPO = Path(__file__).resolve().parents[2]
COCO_TINY = Path(os.environ.get("ATSS_BENCH_TEST_COCO",
                                REPO.parent / "shared" / "data" / "coco-tiny"))


def write_coco(root: Path, images: list[dict], annotations: list[dict], split: str = "val2017",
               image_files: bool = False) -> Path:
    """A COCO-layout folder; ``image_files``: grey JPEGs of the listed sizes too."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    for i, ann in enumerate(annotations):
        ann.setdefault("id", i + 1)
        ann.setdefault("category_id", 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    for image in images:
        image.setdefault("file_name", f"{image['id']:012d}.jpg")
        if image_files:
            pixels = np.full((image["height"], image["width"], 3), 128, dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / image["file_name"], quality=95)
    payload = {"images": images, "annotations": annotations,
               "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(payload))
    return root


def random_coco(root: Path, num_images: int, seed: int, sizes=((120, 160), (160, 120), (97, 131))
                ) -> Path:
    """Random boxes, from sub-pixel to larger than the image, some at or over the borders."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for index in range(num_images):
        height, width = sizes[index % len(sizes)]
        images.append({"id": 10 * index + 3, "height": height, "width": width})
        for _ in range(int(rng.integers(0, 9))):
            w = float(np.exp(rng.uniform(np.log(0.5), np.log(1.2 * width))))
            h = float(np.exp(rng.uniform(np.log(0.5), np.log(1.2 * height))))
            x, y = rng.uniform(-0.2 * w, width - 0.8 * w), rng.uniform(-0.2 * h, height - 0.8 * h)
            annotations.append({"image_id": 10 * index + 3, "bbox": [x, y, w, h],
                                "area": w * h * rng.uniform(0.5, 1.0),
                                "iscrowd": int(rng.random() < 0.05)})
    return write_coco(root, images, annotations)


def anchor_args(settings: Any) -> dict[str, Any]:
    """The anchor keyword arguments of the reference helpers from ``AnchorSettings``."""
    return {"strides": settings.strides, "octave_base_scale": settings.octave_base_scale,
            "scales_per_octave": settings.scales_per_octave,
            "aspect_ratios": settings.aspect_ratios}


def reference_positives(annotation_path: Path, min_size: int, max_size: int, divisibility: int,
                        anchor_args: dict[str, Any], strategy: str, params: dict[str, Any]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Plain computation, image by image with every anchor: per GT (images by id, annotation
    order) positives per level [G, L] and the sum of their IoUs [G]."""
    per_level, iou_sums = [], []
    for anchors, level, boxes, matched in reference_assignments(
            annotation_path, min_size, max_size, divisibility, anchor_args, strategy, params):
        iou = box_iou(anchors, boxes)  # [N, M]
        for m in range(len(boxes)):
            mine = matched == m
            per_level.append(torch.bincount(level[mine],
                                            minlength=len(anchor_args["strides"])).numpy())
            iou_sums.append(float(iou[mine, m].double().sum()))
    return np.array(per_level).reshape(-1, len(anchor_args["strides"])), np.array(iou_sums)


def reference_positive_sets(annotation_path: Path, min_size: int, max_size: int,
                            divisibility: int, anchor_args: dict[str, Any], strategy: str,
                            params: dict[str, Any]) -> list[set[int]]:
    """Plain computation: per GT (as ``reference_positives``) the set of its positive anchors,
    by their index among the image's anchors."""
    sets = []
    for _, _, boxes, matched in reference_assignments(
            annotation_path, min_size, max_size, divisibility, anchor_args, strategy, params):
        sets += [set((matched == m).nonzero()[:, 0].tolist()) for m in range(len(boxes))]
    return sets


def reference_assignments(annotation_path: Path, min_size: int, max_size: int,
                          divisibility: int, anchor_args: dict[str, Any], strategy: str,
                          params: dict[str, Any]):
    """Per image with GTs (by id): its anchors [N, 4], their levels [N], its resized GT boxes
    [M, 4] and ``assign()``'s answer [N] on every anchor."""
    data = json.loads(annotation_path.read_text())
    strides = anchor_args["strides"]
    for image in sorted(data["images"], key=lambda i: i["id"]):
        height, width = image["height"], image["width"]
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]
        new_h, new_w = _resize(height, width, min_size, max_size)
        boxes = boxes * torch.tensor([new_w / width, new_h / height] * 2, dtype=torch.float32)
        if len(boxes) == 0:
            continue
        pad_h = math.ceil(new_h / divisibility) * divisibility
        pad_w = math.ceil(new_w / divisibility) * divisibility
        sizes = [(math.ceil(pad_h / s), math.ceil(pad_w / s)) for s in strides]
        anchors_per_level = generate_anchors(sizes, **anchor_args)
        counts = [len(a) for a in anchors_per_level]
        level = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)])
        anchors = torch.cat(anchors_per_level)
        yield anchors, level, boxes, assign(strategy, anchors, counts, boxes, **params)


def _resize(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """maskrcnn-benchmark's resize, written out again."""
    short, long = min(height, width), max(height, width)
    size = min_size
    if long / short * size > max_size:
        size = round(max_size * short / long)
    if short == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)
