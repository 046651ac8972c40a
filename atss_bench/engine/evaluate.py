"""COCO bbox evaluation: the only module that imports pycocotools / faster_coco_eval.

``evaluate_coco(gt, detections)`` runs COCOeval on COCO-format results and returns the 12
standard statistics x 100 under the names of :data:`STAT_NAMES`. faster-coco-eval (C++
``COCOeval_faster``, same numbers, several times faster) is used when it is installed, else
pycocotools. A statistic that COCOeval reports as -1 (no ground truth in that area range)
becomes NaN. Zero detections are fine: AP 0, no crash (pycocotools' ``loadRes([])`` would).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import math
from pathlib import Path
from typing import Any, Literal, Sequence

from atss_bench.data.annotation_file import load_annotation_file
from atss_bench.errors import ConfigError

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
Evaluator = Literal["pycocotools", "faster_coco_eval"]
EVALUATORS: tuple[Evaluator, ...] = ("faster_coco_eval", "pycocotools")  # preference order


def available_evaluators() -> list[Evaluator]:
    return [name for name in EVALUATORS if importlib.util.find_spec(name) is not None]


def resolve_evaluator(name: str = "auto") -> Evaluator:
    """``"auto"``: faster_coco_eval when installed, else pycocotools."""
    available = available_evaluators()
    if name == "auto":
        if not available:
            raise ConfigError("neither faster-coco-eval nor pycocotools is installed",
                              hint="pip install pycocotools")
        return available[0]
    if name not in EVALUATORS:
        raise ConfigError(f"unknown evaluator {name!r}", hint=f"one of {list(EVALUATORS)} or auto")
    if name not in available:
        raise ConfigError(f"evaluator {name!r} is not installed", hint=f"pip install {name}")
    return name  # type: ignore[return-value]


def load_gt_dict(gt: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A COCO annotation dict, from a dict (as given) or a JSON file (read and validated by
    ``data.annotation_file.load_annotation_file``: DataError naming the file if malformed)."""
    if isinstance(gt, dict):
        return gt
    return load_annotation_file(gt)


def _stats_to_metrics(stats: Sequence[float]) -> dict[str, float]:
    metrics = {}
    for name, value in zip(STAT_NAMES, list(stats)[: len(STAT_NAMES)]):
        value = float(value)
        metrics[name] = math.nan if value < 0 else 100.0 * value
    return metrics


def _run_pycocotools(gt: dict, detections: list[dict], image_ids: list[int]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    if detections:
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
    else:  # loadRes([]) raises IndexError
        coco_dt = COCO()
        coco_dt.dataset = {"images": gt["images"], "categories": gt.get("categories", []),
                           "annotations": []}
        coco_dt.createIndex()
    evaluator = COCOeval(coco_gt, coco_dt, "bbox")
    evaluator.params.imgIds = image_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return list(evaluator.stats)


def _run_faster(gt: dict, detections: list[dict], image_ids: list[int]) -> list[float]:
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(copy.deepcopy(gt))
    coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
    evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
    evaluator.params.imgIds = image_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return list(evaluator.stats)


def evaluate_coco(
    gt: dict[str, Any] | str | Path,
    detections: list[dict[str, Any]],
    *,
    image_ids: Sequence[int] | None = None,
    evaluator: str = "auto",
) -> tuple[dict[str, float], Evaluator]:
    """COCOeval (bbox) of ``detections`` against ``gt``.

    Args:
        gt: COCO annotation dict or path to an ``instances_*.json``.
        detections: COCO results: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
            in original image coordinates and COCO category ids.
        image_ids: the evaluated images (default: every image of ``gt``); images without a
            detection count as misses.
        evaluator: ``"auto"``, ``"pycocotools"`` or ``"faster_coco_eval"``.

    Returns:
        (metrics, evaluator name): metrics maps :data:`STAT_NAMES` to COCOeval stats x 100.
    """
    gt_dict = load_gt_dict(gt)
    name = resolve_evaluator(evaluator)
    ids = sorted(int(i) for i in (image_ids if image_ids is not None
                                  else [img["id"] for img in gt_dict["images"]]))
    run = _run_faster if name == "faster_coco_eval" else _run_pycocotools
    with contextlib.redirect_stdout(io.StringIO()):  # both print progress and the summary table
        stats = run(gt_dict, detections, ids)
    return _stats_to_metrics(stats), name
