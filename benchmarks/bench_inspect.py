"""Time `inspect-assign` statistics on a val2017-sized split against the 60 s target.

    python benchmarks/bench_inspect.py [--images 5000] [--profile full] [--rules ...]

Synthesises a COCO annotation file (no images) with COCO-like statistics in a temporary folder:
640-px-long images (640x480, 640x427, 480x640, 640x640, ...), 1 + negative-binomial objects per
image (mean ~7.3, ~1% empty images, ~1% crowd regions), log-normal box sizes (about 40% small,
35% medium, 25% large by COCO's area ranges) and aspect ratios. Then times, per rule, the
statistics of ``atss_bench.inspect`` (grouped by padded size, vectorised, each image on the
anchors that can matter) and, on a sample of images, a plain loop calling
``atss_bench.assign.assign`` image by image on every anchor (extrapolated to all images), both
single-threaded (``--loop-threads`` for the loop; torch's default is one thread per core).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from atss_bench.assign import assign
from atss_bench.inspect import (
    anchors_for_padded_size,
    build_anchor_settings,
    count_positives,
    load_split_ground_truth,
    padded_size,
    resolve_rule_configs,
)
from atss_bench.inspect.count import torch_threads
from atss_bench.inspect.stats import level_names, summarize
from atss_bench.model import build_assigner

TARGET_SECONDS = 60.0
IMAGE_SIZES = [(480, 640), (427, 640), (640, 480), (640, 640), (360, 640), (640, 427), (512, 640)]
IMAGE_SIZE_P = [0.45, 0.2, 0.15, 0.06, 0.06, 0.05, 0.03]


def synthesize_annotations(num_images: int, seed: int = 0) -> dict:
    """A COCO annotation dict with COCO-like box statistics (see the module docstring)."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for index in range(num_images):
        height, width = IMAGE_SIZES[rng.choice(len(IMAGE_SIZES), p=IMAGE_SIZE_P)]
        image_id = 2 * index + 1
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": height,
                       "width": width})
        num_objects = 0 if rng.random() < 0.01 else 1 + int(rng.negative_binomial(1.2, 1.2 / 7.5))
        for _ in range(min(num_objects, 60)):
            side = float(np.exp(rng.normal(np.log(45.0), 1.0)))
            side = min(max(side, 2.0), 0.95 * min(width, height))
            aspect = float(np.exp(rng.normal(0.0, 0.55)))  # w / h
            w = min(side * np.sqrt(aspect), width - 1.0)
            h = min(side / np.sqrt(aspect), height - 1.0)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": 1, "bbox": [x, y, w, h], "area": w * h * 0.8,
                                "iscrowd": int(rng.random() < 0.01 / 7.3)})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "object"}]}


def time_plain_loop(gt, rule: str, config, sample: np.ndarray, threads: int | None) -> float:
    """Seconds of `assign(...)` called image by image (anchors cached per padded size)."""
    assigner = build_assigner(config.model)
    settings = build_anchor_settings(config.model)
    cache = {}
    with torch_threads(threads):
        start = time.perf_counter()
        _plain_loop(gt, rule, config, sample, assigner, settings, cache)
        return time.perf_counter() - start


def _plain_loop(gt, rule, config, sample, assigner, settings, cache) -> None:
    for i in sample:
        size = padded_size(*map(int, gt.sizes[i]), config.data.size_divisibility)
        if size not in cache:
            cache[size] = anchors_for_padded_size(settings, size)
        anchors = cache[size]
        boxes = gt.boxes[gt.gt_offsets[i]:gt.gt_offsets[i + 1]]
        matched = assign(rule, anchors.anchors, anchors.num_anchors_per_level, boxes,
                         **assigner.params)
        torch.bincount(matched[matched >= 0], minlength=len(boxes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--profile", default="full")
    parser.add_argument("--rules", default="max_iou,fcos,topk_scale,atss")
    parser.add_argument("--loop-sample", type=int, default=300,
                        help="images timed in the plain per-image loop (extrapolated)")
    parser.add_argument("--loop-threads", type=int, default=1,
                        help="torch threads for the plain loop (0: torch's default)")
    parser.add_argument("--no-prune", action="store_true",
                        help="ours on every anchor (no inspect.prune), to measure the pruning")
    args = parser.parse_args()
    torch.manual_seed(0)
    rules = [r.strip() for r in args.rules.split(",")]
    configs = resolve_rule_configs(args.profile, rules, {})

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "instances_val2017.json"
        start = time.perf_counter()
        path.write_text(json.dumps(synthesize_annotations(args.images)))
        made = time.perf_counter() - start
        data = configs[rules[0]].data
        start = time.perf_counter()
        gt = load_split_ground_truth(path, data.test_min_size, data.max_size)
        load_s = time.perf_counter() - start
    print(f"{gt.num_images} images, {gt.num_gt} GT boxes (synthesised in {made:.1f} s); "
          f"profile {args.profile}: resize {data.test_min_size}/{data.max_size}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"load annotations: {load_s:.2f} s")
    total = load_s
    sample = np.random.default_rng(0).choice(
        np.flatnonzero(np.diff(gt.gt_offsets) > 0), size=min(args.loop_sample, gt.num_images),
        replace=False)
    with_gt = int((np.diff(gt.gt_offsets) > 0).sum())
    print(f"{'rule':<11} {'ours s':>8} {'loop s (est.)':>14} {'loop / ours':>12}")
    counts = {}
    for rule in rules:
        config = configs[rule]
        settings = build_anchor_settings(config.model)
        start = time.perf_counter()
        counts[rule] = count_positives(gt, build_assigner(config.model), settings,
                                       config.data.size_divisibility, prune=not args.no_prune)
        ours = time.perf_counter() - start
        total += ours
        loop = time_plain_loop(gt, rule, config, sample, args.loop_threads or None)
        loop *= with_gt / len(sample)
        print(f"{rule:<11} {ours:8.2f} {loop:14.1f} {loop / ours:11.1f}x")
    start = time.perf_counter()
    summarize(gt, counts, level_names(settings.strides))
    summary = time.perf_counter() - start
    total += summary
    print(f"summary table: {summary:.2f} s")
    print(f"total (load + {len(rules)} rules + summary): {total:.1f} s = "
          f"{total / TARGET_SECONDS:.2f} x the {TARGET_SECONDS:.0f} s target")


if __name__ == "__main__":
    main()
