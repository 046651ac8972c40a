"""Markdown reports: golden files for Tables 1, 2, 3, 4 and 7, and the arithmetic behind them."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from atss_bench.report import build_report, render_table
from atss_bench.report.summary import seed_run_ids, summarize_table

LONG = ("TrainingError: non-finite loss at iter 812 | grad norm inf after 3 retries of the same"
        " batch")


def test_table1_checks_layout(table, make_frame, golden):
    t1 = table(1)
    frame = make_frame(t1, "mini", {
        "none": [-14.0, -13.6], "gn": [-13.5, ("failed", LONG)], "giou": [-12.0],
        "in_gt_box": [("running", 450, 1200)], "centerness": [("pending",)],
        "scalar": [("failed", "RuntimeError: CUDA out of memory")],
    })
    golden("table1_mini.md", render_table(t1, frame, "mini", seeds=2))


def test_table2_grid_layout(table, make_frame, golden):
    t2 = table(2)
    frame = make_frame(t2, "full", {
        "iou_box": [-0.4], "iou_point": [-0.2, 0.0, 0.4],
        "scale_box": [("failed", "TrainingError: non-finite loss at iter 3")],
    })
    golden("table2_full.md", render_table(t2, frame, "full"))


def test_table3_all_metrics(table, make_frame, golden):
    t3 = table(3)
    frame = make_frame(t3, "mini", {
        "retinanet": [0.1, 0.3, 0.5], "retinanet_atss": [0.2, 0.2, 0.2],
        "fcos": [-0.1, 0.0, 0.1], "fcos_center_sampling": [0.0, 0.2, ("running", 10, 1200)],
        "fcos_atss": [("timed-out", "slurm time limit 4:00:00")],
    }, shift=-16.0)
    golden("table3_mini.md", render_table(t3, frame, "mini", seeds=3))


def test_table4_sweep_with_whatever_seeds_exist(table, make_frame, golden):
    t4 = table(4)
    frame = make_frame(t4, "mini", {
        "k3": [-1.0], "k5": [-0.4, -0.2], "k7": [0.0, 0.1, 0.2], "k9": [0.1],
        "k11": [None, 0.0], "k13": [0.0], "k15": [-0.1], "k17": [("running", 600, 1200)],
    }, shift=-15.0)
    golden("table4_mini.md", render_table(t4, frame, "mini"))


def test_table7_value_columns(table, make_frame, golden):
    t7 = table(7)
    frame = make_frame(t7, "full", {
        "retinanet_a9": [0.2], "imprs_a9": [-0.3], "atss_3x3": [0.0], "atss_3x1": [-0.1],
        "atss_1x3": [("cancelled", "scancel by user")], "atss_1x1": [0.1],
    })
    golden("table7_full.md", render_table(t7, frame, "full"))


def test_seed_run_ids_match_recipe_expansion(table):
    t4 = table(4)
    ids = seed_run_ids(t4, "mini", 3)
    expanded = t4.experiments("mini", seeds=3)
    for row in t4.rows:
        assert ids[row.id] == [e.run_id for e in expanded if e.row_id == row.id]


def test_mean_std_and_delta_by_hand(table, make_frame):
    t4 = table(4)
    frame = make_frame(t4, "full", {"k9": [-1.3, -0.3, 0.7]})  # 38.0, 39.0, 40.0
    k9 = next(s for s in summarize_table(t4, frame, "full", 3).rows if s.row.id == "k9")
    stat = k9.metrics["AP"]
    assert (stat.n, stat.mean, stat.std) == (3, pytest.approx(39.0), pytest.approx(1.0))
    assert stat.delta == pytest.approx(-0.3)
    lines = render_table(t4, frame, "full", 3).splitlines()
    line = next(line for line in lines if line.startswith("| 9 "))
    assert re.split(r"\s*\|\s*", line.strip("| ")) == ["9", "39.3", "39.0 ± 1.0", "-0.3", "n=3/3"]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_no_results_never_blank_or_zero(table):
    for n in (1, 2, 3, 4, 7):
        recipe = table(n)
        text = render_table(recipe, pd.DataFrame(), "mini")
        lines = [line for line in text.splitlines() if line.startswith("| ")]
        body = [_cells(line) for line in lines[2:]]
        assert len(body) == (2 if n == 2 else len(recipe.rows))
        checks = len(recipe.layout.checks)
        for cells in body:
            first = 1 if n == 2 else len(cells) - len(recipe.layout.metrics) - 1
            if len(recipe.layout.metrics) == 1 and n != 2:  # paper | ours | Δ | runs
                first -= 2
                assert cells[first + 2] == "–"
            results = cells[first:]
            assert all(results) and sum("not run" in c for c in results) >= len(results) - 2
            assert not any(re.search(r"(^|\D)0\.0\b|nan", c) for c in results), cells
        assert checks == 0 or all(set(c[1:1 + checks]) <= {"✓", ""} for c in body)
        assert "not comparable to the paper's absolute numbers" in text


def test_shared_runs_report_in_both_tables(table, make_frame):
    t2, t3 = table(2), table(3)
    frame = make_frame(t3, "mini", {"retinanet": [-20.0]})
    grid = render_table(t2, frame, "mini")
    assert "37.0 → 17.0 (-20.0), n=1" in grid  # Table 3's retinanet is Table 2's iou_box


def test_full_profile_title_and_provenance(table, make_frame):
    frame = make_frame(table(7), "full", {"atss_1x1": [0.0, 0.2, 0.4]})
    text = render_table(table(7), frame, "full")
    assert "Profile `full`: the paper's setting" in text
    assert "not comparable" not in text
    assert "3 finished runs" in text and "0123456-dirty" not in text
    assert "Commit: 0123456 (2), fedcba9-dirty (1)" in text and "World size: 8" in text


def test_build_report_links_sweep_plots(table, make_frame, tmp_path):
    frame = make_frame(table(4), "mini", {"k9": [-15.0]})
    report = build_report([table(2), table(4)], frame, "mini", plot_dir=tmp_path / "plots",
                          link_base=tmp_path)
    assert report.plots == [tmp_path / "plots" / "table4_mini.png"]
    assert report.plots[0].is_file()
    assert "![Table 4: ours vs. the paper](plots/table4_mini.png)" in report.markdown
    assert report.markdown.index("## Table 2") < report.markdown.index("## Table 4")


def test_undefined_metric_of_a_finished_run_says_n_a(table, make_frame):
    t3 = table(3)
    frame = make_frame(t3, "mini", {"fcos": [-20.0]})
    frame.loc[0, "APl"] = float("nan")  # COCOeval -1: no large objects in mini-COCO's val set
    line = next(line for line in render_table(t3, frame, "mini").splitlines()
                if line.startswith("| FCOS "))
    cells = _cells(line)
    assert cells[1] == "37.8 → 17.8 (-20.0)" and cells[6] == "48.8 → n/a" and cells[7] == "n=1"
