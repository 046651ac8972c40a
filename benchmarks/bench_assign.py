"""Per-image time of each assignment rule vs the plain per-GT reference of the tests.

    python benchmarks/bench_assign.py [--repeat 5] [--device cpu] [--batch 8] [--threads 1]

Scene: an 800x1216 image, P3-P7 anchors (#A=1: one 8S square; #A=9: 3 scales x 3 ratios),
7 and 50 random GTs of 4-600 px. Prints milliseconds (best of the repeats) and the speed-up
(reference time / our time); then one padded call vs a loop of per-image calls over a batch
(what ``assign_batched`` chooses between). One torch thread by default: stable numbers on a
shared machine.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atss_bench.assign import assign, get_assigner
from atss_bench.assign.batched import run_padded, run_per_image
from tests.assign.reference import (
    FCOS_RANGES,
    STRIDES,
    make_anchors,
    random_gt_boxes,
    reference_atss,
    reference_fcos,
    reference_max_iou,
    reference_topk_scale,
)


def _params(strategy: str, num_anchors_per_location: int) -> dict:
    if strategy == "fcos":
        return {"strides": STRIDES, "scale_ranges": FCOS_RANGES}
    if strategy == "topk_scale":
        return {"strides": STRIDES, "scale_ranges": FCOS_RANGES,
                "num_anchors_per_location": num_anchors_per_location}
    if strategy == "atss":
        return {"num_anchors_per_location": num_anchors_per_location}
    return {}


def _reference(strategy, anchors, napl, gt_boxes, params):
    if strategy == "max_iou":
        return reference_max_iou(anchors, gt_boxes, **params)
    functions = {"fcos": reference_fcos, "topk_scale": reference_topk_scale, "atss": reference_atss}
    return functions[strategy](anchors, napl, gt_boxes, **params)


def _best_ms(fn, repeat: int, device: torch.device) -> float:
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{'#A':>2} {'GTs':>3} {'rule':<10} {'ours ms':>8} {'ref ms':>8} {'speed-up':>8}")
    for num_per_loc in (1, 9):
        anchors, napl = make_anchors(num_per_loc)
        for num_gt in (7, 50):
            gt_boxes = random_gt_boxes(torch.Generator().manual_seed(num_gt), num_gt, integer=False)
            for strategy in ("max_iou", "fcos", "topk_scale", "atss"):
                params = _params(strategy, num_per_loc)
                on_device = (anchors.to(device), napl, gt_boxes.to(device))
                ours = _best_ms(
                    functools.partial(assign, strategy, *on_device, **params), args.repeat, device
                )
                ref = _best_ms(
                    functools.partial(_reference, strategy, anchors, napl, gt_boxes, params),
                    args.repeat, torch.device("cpu"),
                )
                print(f"{num_per_loc:>2} {num_gt:>3} {strategy:<10} {ours:8.1f} {ref:8.1f}"
                      f" {ref / ours:7.1f}x")
    _bench_batched(args.batch, args.repeat, device)


def _bench_batched(batch_size: int, repeat: int, device: torch.device) -> None:
    print(f"\nbatch of {batch_size} images, 1-50 GTs each: per-image loop vs padded calls (ms)")
    generator = torch.Generator().manual_seed(0)
    counts = torch.randint(1, 51, (batch_size,), generator=generator).tolist()
    gt_boxes = torch.zeros(batch_size, max(counts), 4)
    gt_valid = torch.zeros(batch_size, max(counts), dtype=torch.bool)
    for b, count in enumerate(counts):
        gt_boxes[b, :count] = random_gt_boxes(generator, count, integer=False)
        gt_valid[b, :count] = True
    gt_boxes, gt_valid = gt_boxes.to(device), gt_valid.to(device)
    for num_per_loc in (1, 9):
        anchors, napl = make_anchors(num_per_loc)
        anchors = anchors.to(device)
        for strategy in ("max_iou", "fcos", "topk_scale", "atss"):
            params = _params(strategy, num_per_loc)
            assigner = get_assigner(strategy, params)
            args = (assigner, anchors, napl, gt_boxes, gt_valid, params)
            loop = _best_ms(functools.partial(run_per_image, *args), repeat, device)
            padded = _best_ms(functools.partial(run_padded, *args), repeat, device)
            print(f"#A={num_per_loc} {strategy:<10} loop {loop:8.1f}  padded {padded:8.1f}"
                  f"  (padded is {loop / padded:.2f}x as fast)")


if __name__ == "__main__":
    main()
