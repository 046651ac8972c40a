"""Statistics of each rule's positives over a split's GTs, overall and by size / aspect ratio.

One row per (rule, group): ``group`` is ``all``, ``size`` (COCO's small / medium / large by the
annotation's original ``area``: [0, 32^2), [32^2, 96^2), [96^2, inf), half-open so each GT is
in one bin) or ``aspect`` (w / h of the GT box the rule sees, bins ``ASPECT_LABELS``, half-open).
Columns: ``gts``; ``positives`` (anchors assigned to them); ``pos_per_gt_mean`` / ``_median`` /
``_p10`` (numpy's linear percentile); ``zero_pos_pct`` (% of GTs with no positive);
``mean_iou`` (over positives, of each with its GT); one ``<level>_pct`` per pyramid level (% of
the group's positives on that level). Ratios of an empty group are NaN.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from atss_bench.inspect.count import PositiveCounts
from atss_bench.inspect.gt import SplitGroundTruth

SIZE_EDGES = (0.0, 32.0**2, 96.0**2, math.inf)
SIZE_LABELS = ("small", "medium", "large")
ASPECT_EDGES = (0.0, 1 / 3, 1 / 2, 2.0, 3.0, math.inf)
ASPECT_LABELS = ("<1/3", "1/3-1/2", "1/2-2", "2-3", ">=3")


def level_names(strides: Sequence[int]) -> list[str]:
    """``P3`` .. ``P7`` for strides 8 .. 128."""
    return [f"P{int(math.log2(s))}" for s in strides]


def gt_groups(gt: SplitGroundTruth) -> list[tuple[str, str, np.ndarray]]:
    """(group, bin label, boolean mask [G]) for every row of the statistics, in print order."""
    boxes = gt.boxes.double().numpy()
    aspect = (boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1])
    groups = [("all", "all", np.ones(gt.num_gt, dtype=bool))]
    for name, values, edges, labels in (("size", gt.areas, SIZE_EDGES, SIZE_LABELS),
                                        ("aspect", aspect, ASPECT_EDGES, ASPECT_LABELS)):
        which = np.digitize(values, edges[1:-1])  # bin index, [lo, hi)
        groups.extend((name, label, which == i) for i, label in enumerate(labels))
    return groups


def summarize_group(counts: PositiveCounts, mask: np.ndarray, levels: Sequence[str]
                    ) -> dict[str, float]:
    """The statistics of the GTs in ``mask`` (see the module docstring)."""
    per_gt = counts.positives[mask]
    per_level = counts.per_level[mask].sum(axis=0)
    total = int(per_level.sum())
    has_gts = len(per_gt) > 0
    row: dict[str, float] = {
        "gts": len(per_gt),
        "positives": total,
        "pos_per_gt_mean": float(per_gt.mean()) if has_gts else math.nan,
        "pos_per_gt_median": float(np.median(per_gt)) if has_gts else math.nan,
        "pos_per_gt_p10": float(np.percentile(per_gt, 10)) if has_gts else math.nan,
        "zero_pos_pct": 100.0 * float((per_gt == 0).mean()) if has_gts else math.nan,
        "mean_iou": float(counts.iou_sum[mask].sum() / total) if total else math.nan,
    }
    for name, count in zip(levels, per_level):
        row[f"{name}_pct"] = 100.0 * count / total if total else math.nan
    return row


def summarize(gt: SplitGroundTruth, counts_by_rule: Mapping[str, PositiveCounts],
              levels: Sequence[str]) -> pd.DataFrame:
    """One row per rule and group (module docstring), rules in the given order."""
    groups = gt_groups(gt)
    rows = [{"rule": rule, "group": group, "bin": label, **summarize_group(counts, mask, levels)}
            for rule, counts in counts_by_rule.items() for group, label, mask in groups]
    return pd.DataFrame(rows)
