"""The committed CPU-scale reproduction (results/mini) re-renders from its records, unchanged.

The Markdown in results/mini is what `make mini-report` writes; a change to the report code or
to a recipe that would alter it (or a record edited by hand) fails here, not silently in the
README's numbers.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from atss_bench.recipes import load_recipe
from atss_bench.report import build_report
from atss_bench.report.claims import evaluate_claims, load_claims, render_claims
from atss_bench.report.summary import summarize_table
from atss_bench.store import scan_results

MINI = Path(__file__).resolve().parents[2] / "results" / "mini"
TABLES = (1, 2, 3, 4, 7)


@pytest.fixture(scope="module")
def frame():
    scan = scan_results(MINI)
    assert not scan.warnings, scan.warnings
    return scan.frame


@pytest.mark.parametrize("table", TABLES)
def test_committed_table_rerenders_identically(table, frame, tmp_path):
    recipe = load_recipe(f"recipes/table{table}.yaml")
    report = build_report([recipe], frame, profile="mini", plot_dir=tmp_path, link_base=tmp_path)
    assert report.markdown == (MINI / f"table{table}.md").read_text(encoding="utf-8")
    for plot in report.plots:  # the sweep plot is committed beside its table
        assert (MINI / plot.name).is_file(), plot.name


@pytest.mark.parametrize("table", TABLES)
def test_every_row_has_three_seeds_finished_or_failed(table, frame):
    recipe = load_recipe(f"recipes/table{table}.yaml")
    for row in summarize_table(recipe, frame, "mini", seeds=3).rows:
        states = [r["status"] for r in row.done + row.others]
        assert len(states) == 3 and set(states) <= {"done", "failed"}, (row.row.id, states)


def test_committed_claims_rerender_identically(frame):
    text = render_claims(evaluate_claims(load_claims(), frame, "mini"), "mini")
    assert text == (MINI / "claims.md").read_text(encoding="utf-8")
