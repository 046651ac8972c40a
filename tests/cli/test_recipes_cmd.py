"""CLI `recipes` / `show`, and the one-line errors for malformed input."""
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench.cli.main import app

runner = CliRunner()

GOOD = """\
table: 99
title: "A test table"
rows:
  - id: a
    label: "A"
    set: {model.assign.strategy: max_iou}
    paper: {AP: 30.0}
  - id: b
    label: "B"
    paper: {AP: 31.0}
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_recipes_lists_tables_1_to_8():
    result = invoke("recipes")
    assert result.exit_code == 0, result.output
    for n in range(1, 9):
        assert f"table{n}.yaml" in result.output


def test_show_table2_has_four_rows_in_the_right_cells():
    result = invoke("show", "recipes/table2.yaml")
    assert result.exit_code == 0, result.output
    ids = re.findall(r"\b[0-9a-f]{12}\b", result.output)
    assert len(set(ids)) == 4
    grid = result.output[result.output.index("paper AP"):]
    iou = next(line for line in grid.splitlines() if "Intersection over Union" in line)
    scale = next(line for line in grid.splitlines() if "Spatial and Scale" in line)
    assert re.findall(r"\d+\.\d", iou) == ["37.0", "36.9"]
    assert re.findall(r"\d+\.\d", scale) == ["37.8", "37.8"]


def test_show_yaml_format_and_set_override():
    result = invoke("show", "recipes/table2.yaml", "--row", "iou_box", "--format", "yaml",
                    "--set", "train.max_iter=123", "--profile", "mini")
    assert result.exit_code == 0, result.output
    assert "max_iter: 123" in result.output and "strategy: max_iou" in result.output
    assert result.output.count("run_id") == 1


MALFORMED = {
    "unknown_top_key": (GOOD.replace("title:", "titel:"), "unknown key 'titel'"),
    "misspelled_override": (GOOD.replace("model.assign.strategy: max_iou", "model.head.nrom: gn"),
                            "did you mean 'model.head.norm'"),
    "wrong_type": (GOOD.replace("model.assign.strategy: max_iou", "model.head.num_convs: four"),
                   "model.head.num_convs"),
    "bad_yaml": (GOOD.replace("rows:", "rows: [unclosed"), "invalid YAML"),
    "python_tag": ("!!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),
    "empty_file": ("", "is empty"),
    "duplicate_row_id": (GOOD.replace("id: b", "id: a"), "duplicate row id 'a'"),
    "not_a_mapping": ("- a\n- b\n", "must be a mapping"),
    "unknown_strategy": (GOOD.replace("strategy: max_iou", "strategy: iou"),
                         "must be one of"),
    "param_of_other_rule": (GOOD.replace("{model.assign.strategy: max_iou}",
                                         "{model.assign.strategy: max_iou, model.assign.topk: 9}"),
                            "unknown key 'model.assign.topk'"),
    "out_of_range": (GOOD.replace("model.assign.strategy: max_iou", "model.head.prior_prob: 2"),
                     "model.head.prior_prob"),
    "unknown_metric": (GOOD.replace("paper: {AP: 30.0}", "paper: {mAP: 30.0}"), "rows.0.paper"),
    "no_rows": (GOOD.split("rows:")[0] + "rows: []\n", "rows"),
    "thresholds_reversed": (GOOD.replace("{model.assign.strategy: max_iou}",
                                         "{model.assign.strategy: max_iou, model.assign.bg_iou_thresh: 0.7}"),
                            "bg_iou_thresh must be <= fg_iou_thresh"),
    "bad_row_id": (GOOD.replace("id: b", "id: 'b c'"), "rows.1.id"),
}


def _assert_one_line_error(result, expected: str):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error:")
    assert expected in text, text


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_recipe_is_one_line_exit_2(tmp_path: Path, case: str):
    content, expected = MALFORMED[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(content)
    result = invoke("show", path)
    _assert_one_line_error(result, expected)
    assert str(path) in result.output


def test_missing_file(tmp_path: Path):
    _assert_one_line_error(invoke("show", tmp_path / "nope.yaml"), "not found")


def test_non_utf8_file(tmp_path: Path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    _assert_one_line_error(invoke("show", path), "not a UTF-8")


def test_bad_set_option():
    _assert_one_line_error(invoke("show", "recipes/table2.yaml", "--set", "train.max_iter"),
                           "expected key=value")
    _assert_one_line_error(invoke("show", "recipes/table2.yaml", "--set", "train.max_itr=3"),
                           "did you mean 'train.max_iter'")


def test_unknown_profile():
    _assert_one_line_error(invoke("show", "recipes/table2.yaml", "--profile", "huge"),
                           "profile 'huge' not found")


def test_debug_shows_the_traceback(tmp_path: Path):
    result = invoke("--debug", "show", tmp_path / "nope.yaml")
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "ConfigError"


def test_python_tag_is_never_executed(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    invoke("show", path)
    assert not marker.exists()
