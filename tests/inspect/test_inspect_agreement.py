"""inspect.agreement: how far two rules pick the same positives (by hand, against a plain
per-image reference, through the CLI, on real COCO)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from inspect_helpers import anchor_args, random_coco, reference_positive_sets, write_coco
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.inspect import (
    RULES,
    PositiveCounts,
    build_anchor_settings,
    load_split_ground_truth,
    resolve_rule_configs,
)
from atss_bench.inspect.agreement import (
    AGREEMENT_COLUMNS,
    overlap_per_gt,
    summarize_agreement,
    summarize_agreement_group,
)
from atss_bench.inspect.run import compute_statistics, run_inspection
from atss_bench.model import build_assigner

# (GT, anchor) pairs of 4 GTs, in no order. GT 0: A {1, 2, 7}, B {2, 4, 7} (2 shared of 4);
# GT 1: A = B = {5}; GT 2: no positive; GT 3: A {}, B {7, 10^9} (anchor 7 is GT 0's in A: a
# different GT, so not shared).
REFERENCE = np.array([[0, 7], [1, 5], [0, 1], [0, 2]])
OTHER = np.array([[3, 10**9], [0, 4], [0, 2], [1, 5], [3, 7], [0, 7]])


def _counts(pairs: np.ndarray, num_gt: int) -> PositiveCounts:
    positives = np.bincount(pairs[:, 0], minlength=num_gt)
    return PositiveCounts(positives[:, None], np.zeros(num_gt), pairs)


def test_overlap_counted_by_hand():
    overlap = overlap_per_gt(REFERENCE, OTHER, num_gt=4)
    assert overlap.reference.tolist() == [3, 1, 0, 0]
    assert overlap.other.tolist() == [3, 1, 0, 2]
    assert overlap.both.tolist() == [2, 1, 0, 0]
    assert overlap.union.tolist() == [4, 1, 0, 2]
    assert overlap_per_gt(REFERENCE, np.zeros((0, 2), dtype=np.int64), 4).both.tolist() == [0] * 4


def test_group_agreement_by_hand():
    overlap = overlap_per_gt(REFERENCE, OTHER, num_gt=4)
    everything = summarize_agreement_group(overlap, np.ones(4, dtype=bool))
    assert everything["gts"] == 3  # GT 2 has no positive under either rule
    assert everything["jaccard_mean"] == pytest.approx((2 / 4 + 1 + 0) / 3)
    assert everything["other_in_reference_pct"] == pytest.approx(100 * 3 / 6)
    assert everything["reference_in_other_pct"] == pytest.approx(100 * 3 / 4)
    assert everything["identical_pct"] == pytest.approx(100 / 3)
    some = summarize_agreement_group(overlap, np.array([True, False, False, True]))
    assert some == pytest.approx({"gts": 2, "jaccard_mean": 0.25, "other_in_reference_pct": 40.0,
                                  "reference_in_other_pct": 100 * 2 / 3, "identical_pct": 0.0})
    empty = summarize_agreement_group(overlap, np.array([False, False, True, False]))
    assert empty["gts"] == 0 and all(math.isnan(v) for k, v in empty.items() if k != "gts")


@pytest.mark.parametrize("pairs", [np.array([[4, 0]]), np.array([[-1, 0]]), np.array([[0, -2]])])
def test_pairs_outside_the_split_are_refused(pairs):
    with pytest.raises(ValueError, match="outside 4 GTs"):
        overlap_per_gt(REFERENCE, pairs, num_gt=4)


def test_summary_rows_by_group_against_the_first_rule(tmp_path):
    # GT areas: 500 (small), 16 (small), 1500 (medium), 10^4 (large)
    boxes = [[8, 8, 16, 32, 500.0], [40, 40, 4, 4, 16.0], [16, 0, 48, 16, 1500.0],
             [0, 0, 60, 40, 1e4]]
    root = write_coco(tmp_path, [{"id": 1, "height": 64, "width": 64}],
                      [{"image_id": 1, "bbox": b[:4], "area": b[4]} for b in boxes])
    gt = load_split_ground_truth(root / "annotations" / "instances_val2017.json", 64, 64)
    counts = {"ref": _counts(REFERENCE, 4), "other": _counts(OTHER, 4),
              "same": _counts(REFERENCE[::-1], 4)}
    frame = summarize_agreement(gt, counts)
    assert list(frame.columns) == list(AGREEMENT_COLUMNS) and len(frame) == 2 * 9
    assert set(frame.reference) == {"ref"} and list(frame.rule.unique()) == ["other", "same"]
    rows = frame.set_index(["rule", "group", "bin"])
    small = rows.loc[("other", "size", "small")]  # GTs 0 and 1
    assert (small.gts, small.jaccard_mean, small.identical_pct) == (2, 0.75, 50.0)
    assert small.other_in_reference_pct == pytest.approx(75.0)
    medium, large = rows.loc[("other", "size", "medium")], rows.loc[("other", "size", "large")]
    assert medium.gts == 0 and math.isnan(medium.jaccard_mean)
    assert (large.gts, large.jaccard_mean, large.other_in_reference_pct) == (1, 0.0, 0.0)
    assert math.isnan(large.reference_in_other_pct)  # no positive under the reference
    assert rows.loc[("same", "all", "all")].tolist() == [
        "ref", 2, 1.0, 100.0, 100.0, 100.0]
    single = summarize_agreement(gt, {"ref": counts["ref"]})
    assert single.empty and list(single.columns) == list(AGREEMENT_COLUMNS)


def test_matches_plain_per_image_sets_and_a_rule_agrees_with_itself(tmp_path):
    """Per-GT Jaccard from the pairs equals Python sets built from assign() image by image."""
    root = random_coco(tmp_path / "random", num_images=12, seed=7)
    configs = resolve_rule_configs("mini", RULES)
    data = configs["atss"].data
    path = root / "annotations" / "instances_val2017.json"
    gt = load_split_ground_truth(path, data.test_min_size, data.max_size)
    settings = build_anchor_settings(configs["atss"].model)
    anchors = anchor_args(settings)
    _, counts = compute_statistics(gt, configs)
    sets = {rule: reference_positive_sets(path, data.test_min_size, data.max_size,
                                          data.size_divisibility, anchors, rule,
                                          dict(build_assigner(c.model).params))
            for rule, c in configs.items()}
    for rule, found in counts.items():
        pairs = found.positive_pairs
        assert pairs.dtype == np.int64 and pairs.shape[1] == 2
        assert np.array_equal(np.bincount(pairs[:, 0], minlength=gt.num_gt), found.positives)
        assert np.array_equal(pairs, pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))])
        itself = summarize_agreement(gt, {rule: found, "again": found}).dropna()
        assert len(itself) >= 5 and (itself.jaccard_mean == 1.0).all()
        assert (itself[["other_in_reference_pct", "reference_in_other_pct",
                        "identical_pct"]] == 100.0).all().all()
    for other in ("max_iou", "fcos", "atss"):
        overlap = overlap_per_gt(counts["topk_scale"].positive_pairs,
                                 counts[other].positive_pairs, gt.num_gt)
        expected = [(len(a & b), len(a | b)) for a, b in zip(sets["topk_scale"], sets[other])]
        assert gt.num_gt == len(expected) > 30
        assert list(zip(overlap.both.tolist(), overlap.union.tolist())) == expected, other
        assert 0 < overlap.both.sum() < overlap.union.sum()  # the rules differ, but not entirely


def test_cli_mini_writes_the_agreement_table(tmp_path, monkeypatch):
    monkeypatch.setenv("ATSS_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "inspect-assign", "--data", "mini", "--set", "data.mini.num_train=1",
        "--set", "data.mini.num_val=6", "--images", "0", "--rules", "topk_scale,atss",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Same positives as topk_scale" in result.output and "Jaccard" in result.output
    assert f"wrote {out / 'assign-val2017-mini-agreement.csv'}" in result.output
    frame = pd.read_csv(out / "assign-val2017-mini-agreement.csv")
    assert list(frame.columns) == list(AGREEMENT_COLUMNS) and len(frame) == 9
    assert set(frame.reference) == {"topk_scale"} and set(frame.rule) == {"atss"}
    stats = pd.read_csv(out / "assign-val2017-mini.csv")
    assert len(stats) == 2 * 9  # the statistics table as before
    shown = frame[frame.group == "all"].iloc[0]
    assert 0 < shown.gts <= stats[stats.group == "all"].gts.iloc[0]
    assert 0 < shown.jaccard_mean <= 1
    markdown = (out / "assign-val2017-mini.md").read_text()
    first, second = markdown.split("\n## Same positives as topk_scale\n")
    assert first.count("\n| atss |") == 9 and second.count("\n| topk_scale | atss |") == 9
    assert "| reference | rule | group | bin | GTs compared | Jaccard mean |" in second
    assert (f"| topk_scale | atss | all | all | {int(shown.gts)} | {shown.jaccard_mean:.3f} | "
            f"{shown.other_in_reference_pct:.1f} |") in second


def test_cli_one_rule_writes_no_agreement(tmp_path):
    root = random_coco(tmp_path / "data", num_images=3, seed=1)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["inspect-assign", "--data-root", str(root), "--profile",
                                      "mini", "--rules", "atss", "--images", "0", "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert "Same positives" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["assign-val2017-mini.csv",
                                                    "assign-val2017-mini.md"]
    assert "## Same positives" not in (out / "assign-val2017-mini.md").read_text()


def test_real_coco_small_gts_agree_most(coco_tiny_root, tmp_path):
    """On real COCO (full profile) centre sampling and ATSS pick nearly the same positives for
    small GTs and differ more on medium and large ones (issue 15)."""
    configs = resolve_rule_configs("full", ["topk_scale", "atss"])
    result = run_inspection(coco_tiny_root, "val2017", configs, tmp_path, num_images=0)
    assert result.agreement is not None and result.agreement_csv_path is not None
    assert result.agreement_csv_path.name == "assign-agreement.csv"
    rows = result.agreement.set_index(["group", "bin"])
    everything = rows.loc[("all", "all")]
    assert everything.gts > 500 and 0.5 < everything.jaccard_mean < 0.95
    small = rows.loc[("size", "small")]
    for size in ("medium", "large"):
        assert small.jaccard_mean > rows.loc[("size", size)].jaccard_mean + 0.05, size
        assert small.identical_pct > rows.loc[("size", size)].identical_pct, size
    sizes = rows.loc["size"]
    assert sizes.gts.sum() == everything.gts
