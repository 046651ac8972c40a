"""The committed CPU-scale reproductions (results/<profile>) re-render from their records, unchanged.

The Markdown in results/mini and results/mini-shape is what `make mini-report [REPRO=...]` writes;
a change to the report code or to a recipe that would alter it (or a record edited by hand) fails
here, not silently in the README's numbers.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from atss_bench.recipes import load_recipe
from atss_bench.report import build_report
from atss_bench.report.claims import evaluate_claims, load_claims, render_claims
from atss_bench.report.summary import summarize_table
from atss_bench.store import scan_results

RESULTS = Path(__file__).resolve().parents[2] / "results"
# profile -> the recipes committed for it (every row of each with three seeds), as the
# Makefile's REPRO_RECIPES
COMMITTED = {"mini-shape": ("table1", "table2", "table3", "table4", "table7"),
             "mini": ("table1", "table2", "table3", "table4", "table5", "table6", "table7",
                      "table9", "scales_explained", "center_sampling_explained")}
CASES = [(profile, recipe) for profile, recipes in COMMITTED.items() for recipe in recipes]


@pytest.fixture(scope="module")
def frames():
    out = {}
    for profile in COMMITTED:
        scan = scan_results(RESULTS / profile)
        assert not scan.warnings, scan.warnings
        out[profile] = scan.frame
    return out


@pytest.mark.parametrize("profile,name", CASES)
def test_committed_table_rerenders_identically(profile, name, frames, tmp_path):
    recipe = load_recipe(f"recipes/{name}.yaml")
    report = build_report([recipe], frames[profile], profile=profile, plot_dir=tmp_path,
                          link_base=tmp_path)
    folder = RESULTS / profile
    assert report.markdown == (folder / f"{name}.md").read_text(encoding="utf-8")
    for plot in report.plots:  # the sweep plot is committed beside its table
        assert (folder / plot.name).is_file(), plot.name


@pytest.mark.parametrize("profile,name", CASES)
def test_every_row_has_three_seeds_finished_or_failed(profile, name, frames):
    recipe = load_recipe(f"recipes/{name}.yaml")
    for row in summarize_table(recipe, frames[profile], profile, seeds=3).rows:
        states = [r["status"] for r in row.done + row.others]
        assert len(states) == 3 and set(states) <= {"done", "failed"}, (row.row.id, states)


@pytest.mark.parametrize("profile", sorted(COMMITTED))
def test_committed_claims_rerender_identically(profile, frames):
    text = render_claims(evaluate_claims(load_claims(), frames[profile], profile), profile)
    assert text == (RESULTS / profile / "claims.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("profile", sorted(COMMITTED))
def test_the_readme_shows_each_committed_claims_table_as_rendered(profile):
    """The README's claims table of a reproduction is results/<profile>/claims.md's, row for row
    (re-rendered records cannot leave stale numbers in the README)."""
    claims = (RESULTS / profile / "claims.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in claims.splitlines() if line.startswith("| "))
    readme = (RESULTS.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"(results/{profile})", 1)[1]
    assert "\n" + table + "\n" in re.split(r"\n#{1,3} ", section, maxsplit=1)[0]


MEAN_STD = re.compile(r"\d+\.\d ± \d+\.\d")
INTERVAL = re.compile(r"\[[-+]\d+\.\d\d, [-+]\d+\.\d\d\]")
# Numbers the README quotes on purpose from records no longer committed (the folder's history).
HISTORICAL = {"mini": {"3.7 ± 1.5"}, "mini-shape": set()}


@pytest.mark.parametrize("profile", sorted(COMMITTED))
def test_the_readme_prose_quotes_only_numbers_the_records_render(profile):
    """Every "mean ± std" and every "[low, high]" interval in the README's section on a
    reproduction is a cell of one of its rendered files (tables, claims), so re-made records
    cannot leave a stale number in the prose either."""
    rendered = "".join(path.read_text(encoding="utf-8")
                       for path in sorted((RESULTS / profile).glob("*.md")))
    readme = (RESULTS.parent / "README.md").read_text(encoding="utf-8")
    section = re.split(r"\n#{1,3} ", readme.split(f"(results/{profile})", 1)[1], maxsplit=1)[0]
    quoted = set(MEAN_STD.findall(section)) | set(INTERVAL.findall(section))
    assert len(quoted) >= 5  # the prose does quote numbers
    stale = quoted - set(MEAN_STD.findall(rendered)) - set(INTERVAL.findall(rendered))
    assert stale == HISTORICAL[profile]
