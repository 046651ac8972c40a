"""How far two rules pick the same positives: each GT's positives under a reference rule (the
first one inspected) against its positives under each other rule.

A positive of a GT is an (image, anchor) location assigned to it; since a GT belongs to one image,
the pair (GT index, anchor index) names it (``PositiveCounts.positive_pairs``), and the rules of
one inspection share images, resize and anchors (``run.check_same_geometry``), so two rules'
pairs are comparable. For a GT, A is its set of positives under the reference rule and B under
the other rule. For each GT group of ``stats.gt_groups`` (all, size by the annotation's COCO
area, aspect of the resized box), one row per other rule with:

- ``gts``: the group's GTs with a positive under at least one of the two rules (|A u B| > 0);
  GTs without any are left out of ``jaccard_mean`` and ``identical_pct``;
- ``jaccard_mean``: the mean over those GTs of |A n B| / |A u B| (1: same positives, 0: none
  shared);
- ``other_in_reference_pct``: 100 * sum |A n B| / sum |B| over the group's GTs, the share of the
  other rule's positives that the reference rule picks too (pooled: a GT weighs by its B);
- ``reference_in_other_pct``: 100 * sum |A n B| / sum |A|, the reverse;
- ``identical_pct``: 100 * the share of the ``gts`` compared whose two sets are equal (A = B).

A ratio whose denominator is 0 (an empty group, no positive under a rule) is NaN.

Memory: one int64 code per positive (GT * number of anchor indices + anchor) per rule, compared
with ``np.intersect1d``; per-GT sizes by ``np.bincount``. No Python set, no loop over GTs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from atss_bench.inspect.count import PositiveCounts
from atss_bench.inspect.gt import SplitGroundTruth
from atss_bench.inspect.stats import gt_groups

AGREEMENT_COLUMNS = ("reference", "rule", "group", "bin", "gts", "jaccard_mean",
                     "other_in_reference_pct", "reference_in_other_pct", "identical_pct")


@dataclass(frozen=True)
class PositiveOverlap:
    """Per GT [G], int64: |A| (``reference``), |B| (``other``) and |A n B| (``both``)."""

    reference: np.ndarray
    other: np.ndarray
    both: np.ndarray

    @property
    def union(self) -> np.ndarray:  # [G] |A u B|
        return self.reference + self.other - self.both


def overlap_per_gt(reference_pairs: np.ndarray, other_pairs: np.ndarray, num_gt: int
                   ) -> PositiveOverlap:
    """|A|, |B| and |A n B| of every GT from two rules' (GT, anchor) pairs [P, 2]."""
    pairs = [np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in (reference_pairs, other_pairs)]
    for p in pairs:
        if len(p) and (p[:, 0].min() < 0 or p[:, 0].max() >= num_gt or p[:, 1].min() < 0):
            raise ValueError(f"positive pairs outside {num_gt} GTs or with a negative anchor")
    span = 1 + max((int(p[:, 1].max()) for p in pairs if len(p)), default=0)
    codes = [np.unique(p[:, 0] * span + p[:, 1]) for p in pairs]  # one per (GT, anchor)
    both = np.intersect1d(codes[0], codes[1], assume_unique=True) // span
    reference, other = (np.bincount(c // span, minlength=num_gt) for c in codes)
    return PositiveOverlap(reference, other, np.bincount(both, minlength=num_gt))


def summarize_agreement_group(overlap: PositiveOverlap, mask: np.ndarray) -> dict[str, float]:
    """The agreement of the GTs in ``mask`` [G] (see the module docstring)."""
    union = overlap.union[mask]
    both, reference, other = overlap.both[mask], overlap.reference[mask], overlap.other[mask]
    compared = union > 0
    jaccard = both[compared] / union[compared]
    return {
        "gts": int(compared.sum()),
        "jaccard_mean": float(jaccard.mean()) if len(jaccard) else math.nan,
        "other_in_reference_pct": _percent(both.sum(), other.sum()),
        "reference_in_other_pct": _percent(both.sum(), reference.sum()),
        "identical_pct": _percent(int((jaccard == 1.0).sum()), len(jaccard)),
    }


def summarize_agreement(gt: SplitGroundTruth, counts_by_rule: Mapping[str, PositiveCounts]
                        ) -> pd.DataFrame:
    """One row per other rule and GT group, against the first rule of ``counts_by_rule``
    (columns ``AGREEMENT_COLUMNS``; no row with fewer than two rules)."""
    rules = list(counts_by_rule)
    rows = []
    if rules:
        reference = counts_by_rule[rules[0]].positive_pairs
        groups = gt_groups(gt)
        for rule in rules[1:]:
            overlap = overlap_per_gt(reference, counts_by_rule[rule].positive_pairs, gt.num_gt)
            rows.extend({"reference": rules[0], "rule": rule, "group": group, "bin": label,
                         **summarize_agreement_group(overlap, mask)}
                        for group, label, mask in groups)
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))


def _percent(part: int | float, whole: int | float) -> float:
    return 100.0 * float(part) / float(whole) if whole else math.nan
