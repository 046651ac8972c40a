"""`report --format latex|csv`: golden files written by hand from the fixture stores below.

Fixture values (``make_frame``: every metric = paper + shift + entry):
- Table 2, full: iou_box seeds 36.0, 37.0, 38.0 -> mean 37.0, std 1.0, n 3, Δ 0.0;
  iou_point 36.9 + 0.5 = 37.4 -> n 1, no std, Δ +0.5; scale_box failed; scale_point not run.
- specials (a recipe whose texts hold every LaTeX special), mini: row a seeds 39.5, 40.5 (AP)
  and 59.5, 60.5 (AP50) -> mean 40.0 / 60.0, std sqrt(0.5) = 0.7071, n 2, Δ 0.0; row b running.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from atss_bench.recipes import load_recipe
from atss_bench.report import build_report
from atss_bench.report.csv_table import render_csv
from atss_bench.report.latex import comment_line, escape_latex, render_latex
from atss_bench.report.summary import summarize_table

GOLDEN = Path(__file__).parent / "golden"

SPECIALS = r"""
table: "specials_1"
title: "Specials 50% & $x_1$ #{}~^\\"
rows:
  - id: a
    label: "R&D_net 100% {#1} ~ ^ \\ $"
    checks: [GN]
    set: {model.assign.strategy: atss}
    paper: {AP: 40.0, AP50: 60.0}
  - id: b
    label: "=1+1 plain"
    checks: ["Q&A"]
    set: {model.assign.strategy: fcos}
    paper: {AP: 41.0}
layout:
  kind: checks
  metrics: [AP, AP50]
  checks: [GN, "Q&A"]
"""


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


@pytest.fixture
def table2_full(table, make_frame):
    t2 = table(2)
    frame = make_frame(t2, "full", {
        "iou_box": [-1.0, 0.0, 1.0], "iou_point": [0.5],
        "scale_box": [("failed", "TrainingError: non-finite loss at iter 3")],
    })
    return summarize_table(t2, frame, "full")


@pytest.fixture
def specials_mini(tmp_path, make_frame):
    path = tmp_path / "specials.yaml"
    path.write_text(SPECIALS, encoding="utf-8")
    recipe = load_recipe(path)
    frame = make_frame(recipe, "mini", {"a": [-0.5, 0.5], "b": [("running", 5, 10)]})
    return summarize_table(recipe, frame, "mini")


def test_table2_latex_booktabs(table2_full):
    assert render_latex(table2_full) == golden("table2_full.tex")


def test_table2_csv(table2_full):
    assert render_csv([table2_full]) == golden("table2_full.csv")


def test_latex_escapes_every_special_of_recipe_texts(specials_mini):
    assert render_latex(specials_mini) == golden("specials_mini.tex")


def test_csv_quotes_and_defuses_formulas(specials_mini):
    assert render_csv([specials_mini]) == golden("specials_mini.csv")


def test_csv_of_two_tables_shares_one_header(table2_full, specials_mini):
    lines = render_csv([table2_full, specials_mini]).splitlines()
    assert lines[0] == golden("specials_mini.csv").splitlines()[0]
    assert len(lines) == 1 + 4 + 2
    assert lines[1] == golden("table2_full.csv").splitlines()[1] + ",,,,,"


@pytest.mark.parametrize("text, expected", [
    ("a_b & c", r"a\_b \& c"),
    ("50%", r"50\%"),
    ("\\input{/etc/passwd}", r"\textbackslash{}input\{/etc/passwd\}"),
    ("line\nbreak\x1b[31m", "line break [31m"),
    ("±Δ✓", r"$\pm$$\Delta$\checkmark{}"),
])
def test_escape_latex(text, expected):
    assert escape_latex(text) == expected


def test_a_comment_line_stays_one_line():
    assert comment_line("a\nb\r\\input{x}") == r"% a b \input{x}"


def test_build_report_in_each_format(table, make_frame):
    t2 = table(2)
    frame = make_frame(t2, "full", {"iou_box": [-1.0, 0.0, 1.0], "iou_point": [0.5],
                                    "scale_box": [("failed", "x")]})
    assert build_report([t2], frame, "full", fmt="latex").text == golden("table2_full.tex")
    assert build_report([t2], frame, "full", fmt="csv").text == golden("table2_full.csv")
    assert build_report([t2], frame, "full").text.startswith("## Table 2")
    with pytest.raises(ValueError, match="format"):
        build_report([t2], frame, "full", fmt="html")
