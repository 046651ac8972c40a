"""COCO bbox evaluation: pycocotools vs faster-coco-eval on the same detections, same run.

    python benchmarks/bench_eval.py [--data PATH] [--per-object 4] [--clutter 30] [--repeat 5]

Ground truth: ``--data`` (a COCO-layout root), else ``$ATSS_BENCH_TEST_COCO``, else
``<repo>/../shared/data/coco-tiny``, else a generated mini-COCO (150 val images). Detections:
``--per-object`` noisy copies of every GT box (20 % with a wrong class) plus ``--clutter`` random
low-score boxes per image - a few thousand, scored like a weak detector's output.
Both evaluators run ``--repeat`` times, alternating; reported: the 12 stats side by side with
their largest absolute difference (must be < 1e-4 on COCOeval's 0..1 scale, exit code 1
otherwise) and the median times and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from atss_bench.data.detections import perturbed_detections
from atss_bench.engine.evaluate import STAT_NAMES, available_evaluators, evaluate_coco

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # on COCOeval's 0..1 scale


def find_ground_truth(explicit: str | None) -> tuple[Path, str]:
    candidates = [explicit, os.environ.get("ATSS_BENCH_TEST_COCO"),
                  str(REPO.parent / "shared" / "data" / "coco-tiny")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "annotations" / "instances_val2017.json").is_file():
            return Path(candidate) / "annotations" / "instances_val2017.json", candidate
    from atss_bench.data import ensure_mini_coco

    root = ensure_mini_coco(Path(tempfile.gettempdir()) / "atss-bench-bench-eval", num_train=1,
                            num_val=150)
    return root / "annotations" / "instances_val2017.json", f"generated mini-COCO ({root})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--per-object", type=int, default=4)
    parser.add_argument("--clutter", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    evaluators = available_evaluators()
    if set(evaluators) != {"pycocotools", "faster_coco_eval"}:
        print(f"needs both evaluators installed, found {evaluators}: pip install faster-coco-eval")
        return 1
    gt_file, source = find_ground_truth(args.data)
    gt = json.loads(gt_file.read_text())
    detections = perturbed_detections(gt, per_object=args.per_object,
                                      clutter_per_image=args.clutter)
    print(f"ground truth: {source}: {len(gt['images'])} images, {len(gt['annotations'])} objects;"
          f" {len(detections)} detections")

    times: dict[str, list[float]] = {name: [] for name in ("pycocotools", "faster_coco_eval")}
    stats: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for name in times:
            started = time.perf_counter()
            stats[name], _ = evaluate_coco(gt, detections, evaluator=name)
            times[name].append(time.perf_counter() - started)

    slow, fast = stats["pycocotools"], stats["faster_coco_eval"]
    worst = max(abs(slow[k] - fast[k]) / 100.0 for k in STAT_NAMES if slow[k] == slow[k])
    print(f"{'stat':<6} {'pycocotools':>12} {'faster':>12}")
    for key in STAT_NAMES:
        print(f"{key:<6} {slow[key]:>12.4f} {fast[key]:>12.4f}")
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"max |diff| = {worst:.2e} (0..1 scale; tolerance {TOLERANCE:.0e})")
    print(f"median time over {args.repeat}: pycocotools {median['pycocotools']:.3f} s, "
          f"faster-coco-eval {median['faster_coco_eval']:.3f} s, "
          f"ratio {median['pycocotools'] / median['faster_coco_eval']:.1f}x")
    return 0 if worst < TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
