"""Recipes: every paper table, every row, the paper's numbers, distinct run ids."""
import os
import re
from pathlib import Path

import pytest

from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.errors import ConfigError
from atss_bench.recipes import BUILTIN_RECIPES, METRICS, list_recipes, load_recipe

ROW_COUNTS = {1: 7, 2: 4, 3: 5, 4: 9, 5: 5, 6: 5, 7: 6, 8: 8}
PAPER = Path(os.environ.get("ATSS_BENCH_PAPER",
                            Path(__file__).resolve().parents[2] / "shared" / "paper" / "ATSS.md"))


def recipe(n: int):
    return load_recipe(BUILTIN_RECIPES / f"table{n}.yaml")


def test_every_table_has_a_recipe_with_all_its_rows():
    tables = {load_recipe(p).table: len(load_recipe(p).rows) for p in list_recipes()}
    assert {t: n for t, n in tables.items() if isinstance(t, int) and t != 9} == ROW_COUNTS
    assert tables[9] == 3  # beyond the paper: ATSS, task-aligned, SimOTA (issue 16)
    assert tables["ci"] == 3  # the CI regression recipe (atss-bench check)


@pytest.mark.parametrize("profile", ["full", "mini"])
@pytest.mark.parametrize("table", sorted(ROW_COUNTS))
def test_rows_resolve_to_distinct_run_ids(table, profile):
    experiments = recipe(table).experiments(profile=profile)
    assert len(experiments) == ROW_COUNTS[table]
    assert len({e.run_id for e in experiments}) == len(experiments)


def test_table4_api_example():
    experiments = load_recipe("recipes/table4.yaml").experiments(profile="mini")
    assert len(experiments) == 9
    assert [e.config.model.assign.topk for e in experiments] == [3, 5, 7, 9, 11, 13, 15, 17, 19]
    assert len({e.run_id for e in experiments}) == 9


def test_seeds_multiply_runs_and_change_ids():
    experiments = recipe(2).experiments(profile="mini", seeds=3)
    assert len(experiments) == 12
    assert [e.seed for e in experiments[:3]] == [0, 1, 2]
    assert len({e.run_id for e in experiments}) == 12


@pytest.mark.parametrize("seeds", [0, -1, 101, 100_000_000])
def test_seeds_outside_1_to_100_are_refused_before_anything_is_expanded(seeds):
    with pytest.raises(ConfigError, match=r"seeds must be in 1\.\.100, got"):
        recipe(2).experiments(profile="mini", seeds=seeds)


def test_a_huge_seed_count_on_the_command_line_is_one_line_and_exit_2():
    result = CliRunner().invoke(app, ["run", "recipes/table2.yaml", "-p", "mini", "--dry-run",
                                      "--seeds", "100000000"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: seeds must be in 1..100, got 100000000  (hint: the paper's tables use 1 seed; "
        "a claim rarely needs 10)"]


def test_identical_experiments_share_run_ids_across_tables():
    t2 = {e.row_id: e.run_id for e in recipe(2).experiments()}
    t3 = {e.row_id: e.run_id for e in recipe(3).experiments()}
    t1 = {e.row_id: e.run_id for e in recipe(1).experiments()}
    t4 = {e.row_id: e.run_id for e in recipe(4).experiments()}
    t7 = {e.row_id: e.run_id for e in recipe(7).experiments()}
    assert t2["iou_box"] == t3["retinanet"] == t1["scalar"]
    assert t2["scale_point"] == t3["fcos"] == t1["fcos"]
    assert t3["retinanet_atss"] == t4["k9"] == t7["atss_1x1"]


def test_profile_and_table_settings_apply():
    full8 = recipe(8).experiments(profile="full")[0].config
    assert full8.train.max_iter == 180000 and full8.train.steps == [120000, 160000]
    assert full8.data.min_size == [640, 672, 704, 736, 768, 800]
    mini8 = recipe(8).experiments(profile="mini")[0].config
    assert mini8.train.max_iter != 180000 and mini8.data.kind == "mini"
    full2 = recipe(2).experiments(profile="full")[0].config
    assert full2.train.max_iter == 90000 and full2.data.min_size == [800]


def test_table_variants_are_real_switches():
    t1 = recipe(1).experiments()
    heads = [(e.config.model.head.norm, e.config.model.loss.regression,
              getattr(e.config.model.assign, "center_in_gt", None),
              e.config.model.head.centerness, e.config.model.head.scalar_per_level) for e in t1]
    assert heads == [
        ("none", "smooth_l1", False, "none", False),
        ("gn", "smooth_l1", False, "none", False),
        ("gn", "giou", False, "none", False),
        ("gn", "giou", True, "none", False),
        ("gn", "giou", True, "reg", False),
        ("gn", "giou", True, "reg", True),
        ("gn", "giou", None, "reg", True),
    ]
    t7 = recipe(7).experiments()
    assert [e.config.model.anchors.num_anchors_per_location for e in t7] == [9, 9, 9, 3, 3, 1]


def test_unknown_row_is_an_error():
    with pytest.raises(ConfigError, match="no row 'nope'"):
        recipe(2).experiments(rows=["nope"])


def _paper_numbers(text: str, table: int) -> list[float]:
    match = re.search(rf"^Table {table} - (.*?)(?=^Table \d+ - |^\(|^## )", text, re.S | re.M)
    assert match, f"Table {table} not found in {PAPER}"
    return [float(x) for x in re.findall(r"(?<![\d.])\d+\.\d(?!\d)", match.group(1))]


@pytest.mark.skipif(not PAPER.is_file(), reason=f"paper notes not found at {PAPER}")
@pytest.mark.parametrize("table", sorted(ROW_COUNTS))
def test_paper_metrics_match_the_paper(table):
    ours = []
    for row in recipe(table).rows:
        ours.extend(row.paper[m] for m in METRICS if m in row.paper)
    assert ours == _paper_numbers(PAPER.read_text(), table)


# --- table and profile names end up in job names: short identifiers only -------------------------

NAMED_RECIPE = "table: {table}\ntitle: t\nrows:\n  - id: a\n    label: A\n"


@pytest.mark.parametrize("table,expected", [("7", 7), ("ci", "ci"), ("x_2-b", "x_2-b")])
def test_table_is_a_number_or_a_short_name(tmp_path: Path, table: str, expected) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(NAMED_RECIPE.format(table=table))
    assert load_recipe(path).table == expected


@pytest.mark.parametrize("table", ['"a\\nb"', '"a b"', '"$(id)"', "'x;y'", "true", "[1]", "1.5",
                                   "-1", "x" * 33, "{a: 1}", "~"])
def test_unsafe_table_is_one_line_naming_file_and_key(tmp_path: Path, table: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(NAMED_RECIPE.format(table=table))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert err.value.message.startswith(f"{path}: table: must be a table number")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ['"mini\\nrm -rf ~"', '"mini full"', "'`id`'", "7", "''"])
def test_unsafe_profile_name_is_one_line_naming_file_and_key(tmp_path: Path, name: str) -> None:
    (tmp_path / "profiles").mkdir()
    profile = tmp_path / "profiles" / "p.yaml"
    profile.write_text(f"name: {name}\nset: {{}}\n")
    path = tmp_path / "r.yaml"
    path.write_text(NAMED_RECIPE.format(table=1))
    with pytest.raises(ConfigError) as err:
        load_recipe(path).experiments(profile=str(profile))
    assert err.value.message.startswith(f"{profile}: name: must be a name")
    assert "\n" not in str(err.value)


ROW_PROFILES = """\
table: 99
title: "row profiles"
rows:
  - id: a
    label: "A"
    set: {model.test.nms_thresh: 0.5}
    profiles:
      full: {model.test.nms_thresh: 0.4, model.fpn.extra_source: c5}
  - id: b
    label: "B"
"""


def test_row_profiles_apply_after_set_under_their_profile_only(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(ROW_PROFILES)
    rec = load_recipe(path)
    full = {e.row_id: e.config for e in rec.experiments(profile="full")}
    mini = {e.row_id: e.config for e in rec.experiments(profile="mini")}
    assert (full["a"].model.test.nms_thresh, full["a"].model.fpn.extra_source) == (0.4, "c5")
    assert (mini["a"].model.test.nms_thresh, mini["a"].model.fpn.extra_source) == (0.5, "p5")
    assert full["b"].model.test.nms_thresh == 0.6
    overridden = rec.experiments(profile="full", rows=["a"],
                                 overrides={"model.test.nms_thresh": 0.3})
    assert overridden[0].config.model.test.nms_thresh == 0.3  # --set still wins


@pytest.mark.parametrize("overlay, problem", [
    ("{model.test.nms_tresh: 0.4}", "rows[a].profiles.full: unknown key 'model.test.nms_tresh'"),
    ("{model.test.nms_thresh: 2.0}", "row 'a' (profile full): model.test.nms_thresh"),
])
def test_a_bad_row_profile_overlay_fails_at_load_naming_row_and_profile(tmp_path: Path, overlay,
                                                                         problem) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(ROW_PROFILES.replace(
        "{model.test.nms_thresh: 0.4, model.fpn.extra_source: c5}", overlay))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert problem in err.value.message, err.value.message
