"""`report --reference`: ours beside a reference store's mean ± std, and the consistency rule,
checked on hand-made records with hand-computed numbers (golden Markdown for Table 2)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.report.summary import MetricStat
from atss_bench.report.reference import (PooledStd, compare_with_reference, consistency_limit,
                                         pool_std, render_reference, t_quantile)

COMMITTED_MINI = Path(__file__).resolve().parents[2] / "results" / "mini"
T_995_DF2 = 9.924843  # Student t, 0.995 quantile, 2 degrees of freedom (printed tables: 9.925)
T_995_DF3 = 5.840909
T_995_DF8 = 3.355387


@pytest.mark.parametrize("p, df, expected", [
    (0.995, 1, 63.656741), (0.995, 2, 9.924843), (0.995, 3, 5.840909), (0.995, 4, 4.604095),
    (0.995, 9, 3.249836), (0.995, 30, 2.749996), (0.975, 10, 2.228139), (0.95, 7, 1.894579),
    (0.995, 1000, 2.580755),
])
def test_t_quantile_matches_printed_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-6)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.9995])
def test_t_quantile_closed_forms_for_one_and_two_df(p):
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)  # Cauchy
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))),
                                             rel=1e-9)


@pytest.mark.parametrize("p, df", [(0.4, 3), (1.0, 3), (0.995, 0), (float("nan"), 3)])
def test_t_quantile_rejects_bad_arguments(p, df):
    with pytest.raises(ValueError):
        t_quantile(p, df)


def test_consistency_limit_by_hand():
    # one new seed against 3 reference seeds with std 1: 9.9248 * sqrt(1 + 1/3) = 11.4602
    assert consistency_limit(1.0, 3) == pytest.approx(T_995_DF2 * math.sqrt(4 / 3))
    assert consistency_limit(1.0, 3) == pytest.approx(11.4602, abs=1e-4)
    # the mean of 2 new seeds: sqrt(1/2 + 1/3)
    assert consistency_limit(0.5, 3, 2) == pytest.approx(T_995_DF2 * 0.5 * math.sqrt(5 / 6))
    # a std pooled over 4 rows of 3 seeds: 8 degrees of freedom
    assert consistency_limit(1.0, 3, df=8) == pytest.approx(T_995_DF8 * math.sqrt(4 / 3))


def test_pool_std_by_hand():
    stats = [MetricStat(None, 15.0, 1.0, 3), MetricStat(None, 16.0, 0.5, 3),
             MetricStat(None, 20.0, None, 1), MetricStat(None)]
    # (2 * 1.0 + 2 * 0.25) / 4 = 0.625 on 4 degrees of freedom; 1-seed and empty rows add none
    assert pool_std(stats) == PooledStd(pytest.approx(math.sqrt(0.625)), 4)
    assert pool_std([MetricStat(None, 20.0, None, 1)]) is None


# Table 2's paper APs are 37.0, 36.9, 37.8, 37.8; shift -20 puts every cell at paper - 20 + value.
REFERENCE = {  # 3 seeds each: (14, 15, 16) -> 15.0 ± 1.0, (15.5, 16, 16.5) -> 16.0 ± 0.5, ...
    "iou_box": [-3.0, -2.0, -1.0], "iou_point": [-1.4, -0.9, -0.4],
    "scale_box": [7.7, 7.8, 7.9], "scale_point": [6.7, 6.8, 6.9],
}
OURS = {  # seed 0 only, as `make demo` trains it: 12.0, failed, 27.0, 25.1
    "iou_box": [-5.0], "iou_point": [("failed", "TrainingError: non-finite loss at iter 3")],
    "scale_box": [9.2], "scale_point": [7.3],
}


def test_demo_shaped_comparison_by_hand(table, make_frame):
    t2 = table(2)
    rows = compare_with_reference(t2, make_frame(t2, "mini", OURS, shift=-20.0),
                                  make_frame(t2, "mini", REFERENCE, shift=-20.0), "mini")
    assert [r.row.id for r in rows] == ["iou_box", "iou_point", "scale_box", "scale_point"]
    assert [r.ours.mean for r in rows] == pytest.approx([12.0, None, 27.0, 25.1])
    assert [r.reference.mean for r in rows] == pytest.approx([15.0, 16.0, 25.6, 24.6])
    assert [r.reference.std for r in rows] == pytest.approx([1.0, 0.5, 0.1, 0.1])
    assert [r.delta for r in rows] == pytest.approx([-3.0, None, 1.4, 0.5])
    # pooled: (2 * 1 + 2 * 0.25 + 2 * 0.01 + 2 * 0.01) / 8 = 0.3175, s = 0.563471 on 8 df
    assert rows[0].pooled == PooledStd(pytest.approx(0.563471, abs=1e-6), 8)
    one_seed = T_995_DF8 * 0.563471 * math.sqrt(4 / 3)  # 2.18315 for every row (n = 3, k = 1)
    assert one_seed == pytest.approx(2.18315, abs=1e-5)
    assert [r.limit for r in rows] == pytest.approx([one_seed, None, one_seed, one_seed])
    # 3.0 > 2.18: no; not run: –; 1.4 <= 2.18: yes; 0.5 <= 2.18: yes
    assert [r.consistent for r in rows] == ["no", "–", "yes", "yes"]


def test_demo_shaped_comparison_golden(table, make_frame, golden):
    t2 = table(2)
    rows = compare_with_reference(t2, make_frame(t2, "mini", OURS, shift=-20.0),
                                  make_frame(t2, "mini", REFERENCE, shift=-20.0), "mini")
    golden("table2_reference_mini.md", render_reference(t2, rows, "results/mini"))


def test_reference_with_too_few_seeds_gives_no_verdict(table, make_frame):
    t2 = table(2)
    reference = make_frame(t2, "mini", {"iou_box": [-3.0, -1.0], "iou_point": [0.0],
                                        "scale_point": [6.7, 6.8, 6.9]}, shift=-20.0)
    ours = make_frame(t2, "mini", {"iou_box": [100.0], "iou_point": [0.0], "scale_box": [0.0],
                                   "scale_point": [7.3, 7.5]}, shift=-20.0)
    rows = compare_with_reference(t2, ours, reference, "mini")
    # pooled over (14, 16) and (24.5, 24.6, 24.7): (1 * 2 + 2 * 0.01) / 3, s = 0.820569 on 3 df
    s_pooled = 0.820569
    assert rows[0].pooled == PooledStd(pytest.approx(s_pooled, abs=1e-6), 3)
    # n = 2, k = 1: 5.840909 * 0.820569 * sqrt(1 + 1/2) = 5.87004; 137 vs 15 is far outside
    assert rows[0].limit == pytest.approx(T_995_DF3 * s_pooled * math.sqrt(1.5), abs=1e-5)
    assert rows[0].consistent == "no"
    # one reference seed still gets a verdict from the pooled std: sqrt(1 + 1) = 6.77814
    assert rows[1].limit == pytest.approx(T_995_DF3 * s_pooled * math.sqrt(2), abs=1e-5)
    assert rows[1].consistent == "yes" and rows[2].consistent == "n/a (no reference run)"
    # ours = mean of 2 seeds (25.1, 25.3) = 25.2: limit sqrt(1/2 + 1/3) = 4.37527, Δ 0.6
    assert rows[3].ours.n == 2 and rows[3].delta == pytest.approx(0.6)
    assert rows[3].limit == pytest.approx(T_995_DF3 * s_pooled * math.sqrt(5 / 6), abs=1e-5)
    assert rows[3].consistent == "yes"
    lone = compare_with_reference(t2, ours, make_frame(t2, "mini", {"iou_box": [0.0]},
                                                       shift=-20.0), "mini")
    assert lone[0].pooled is None and lone[0].consistent == "n/a (reference n < 2)"
    text = render_reference(t2, rows, "ref")
    assert "| AP reference " in text and "15.0 ± 1.4 (n=2)" in text and "– (n=0)" in text


def test_cli_reference_against_the_committed_reproduction():
    result = CliRunner().invoke(app, ["report", "--table", "2", "--profile", "mini", "--results",
                                      str(COMMITTED_MINI), "--reference", str(COMMITTED_MINI)])
    assert result.exit_code == 0, result.output
    assert "AP reference (5 seeds)" in result.output  # Table 2: five seeds a row
    lines = [line for line in result.output.splitlines() if "| +0.0 " in line]
    assert len(lines) == 4 and all("| yes (within ±" in line for line in lines), lines


@pytest.mark.parametrize("args, words", [
    (["--table", "2", "--reference", "{missing}"], "not a results folder"),
    (["--claims", "--reference", str(COMMITTED_MINI)], "--reference"),
])
def test_cli_reference_errors_are_one_line_exit_2(tmp_path: Path, args, words):
    args = [a.replace("{missing}", str(tmp_path / "nowhere")) for a in args]
    result = CliRunner().invoke(app, ["report", "--profile", "mini", "--results", str(tmp_path),
                                      *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
