"""`atss-bench diff A B`: config keys, dataset, code, metrics of two runs (or recipe rows)."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.job import run_experiment_job
from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS, load_recipe
from atss_bench.store.diff import ABSENT, config_differences, diff_runs

T2 = "recipes/table2.yaml"
COMMITTED = Path(__file__).resolve().parents[2] / "results" / "mini"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def config_section(output: str) -> list[str]:
    """The lines of the ``config:`` section (up to the blank line after it)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("config:"))
    end = lines.index("", start)
    return lines[start:end]


def make_train(ap: float):
    def train(config, run_dir, *, data_root=None, progress=True):
        return {"metrics": {m: ap for m in METRICS},
                "provenance": {"device": "cpu", "world_size": 1, "evaluator": "pycocotools",
                               "versions": {"torch": "2.14.1"}}}
    return train


@pytest.fixture
def store(tmp_path) -> tuple[Path, str, str]:
    """Table 2's two IoU cells (mini) done with AP 30.0 and 31.5."""
    a, b = load_recipe(T2).experiments("mini", rows=["iou_box", "iou_point"])
    run_experiment_job(tmp_path, a, train_fn=make_train(30.0))
    run_experiment_job(tmp_path, b, train_fn=make_train(31.5))
    return tmp_path, a.run_id, b.run_id


@pytest.mark.parametrize("profile", ["full", "mini"])
def test_table2_iou_cells_differ_in_the_regression_start_only(tmp_path, profile):
    result = invoke("diff", f"{T2}:iou_box", f"{T2}:iou_point", "--profile", profile,
                    "--results", tmp_path)
    assert result.exit_code == 0, result.output
    assert config_section(result.output) == [
        "config: 1 key differs",
        "  key                     A    B",
        "  model.regression.start  box  point",
    ]
    assert "not in the store" in result.output


def test_two_stored_runs_side_by_side(store):
    results, a, b = store
    result = invoke("diff", a, b[:6], "--results", results)
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    assert out[0].startswith(f"A: {a}  ({a}: table 2, row iou_box, 'RetinaNet (#A=1), IoU', "
                             "profile mini, seed 0; done)")
    assert config_section(result.output)[-1].split() == ["model.regression.start", "box",
                                                         "point"]
    assert "  AP      30.00  31.50  +1.50" in out
    assert any(line.split() == ["versions.torch", "2.14.1", "2.14.1", "same"] for line in out)
    [fingerprint] = [line.split() for line in out if line.startswith("  fingerprint")]
    assert fingerprint[1] == fingerprint[2] != "(not" and fingerprint[3] == "same"
    assert any(line.split() == ["dataset", "mini-coco", "seed", "0", "mini-coco", "seed", "0",
                                "same"] for line in out)


def test_a_recipe_row_and_the_run_it_made_differ_in_nothing(store):
    results, a, _ = store
    diff = diff_runs(f"{T2}:iou_box", a, results, profile="mini")
    assert diff.config == [] and diff.a.run_id == diff.b.run_id == a
    assert [(m, x, y) for m, x, y in diff.metrics if m == "AP"] == [("AP", 30.0, 30.0)]


def test_config_differences_name_keys_one_side_lacks():
    assert config_differences({"a": {"b": 1, "c": [1, 2]}, "d": 1},
                              {"a": {"b": 2, "c": [1, 2]}, "e": {"f": None}}) == [
        ("a.b", 1, 2), ("d", 1, ABSENT), ("e.f", ABSENT, None)]


@pytest.mark.parametrize("spec, expected", [
    ("../etc", "is neither a run id nor RECIPE.yaml:ROW"),
    ("ffffffffffff", "is not in the store"),
    ("abc", "is not in the store"),  # a prefix shorter than 4 characters
    (f"{T2}:nope", "no row 'nope'"),
])
def test_bad_operands_are_one_line_errors(store, spec, expected):
    results, a, _ = store
    result = invoke("diff", a, spec, "--results", results)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and expected in result.output


def test_an_ambiguous_prefix_is_refused(store):
    results, a, _ = store
    (results / rd.RUNS / (a[:5] + "zz")).mkdir()
    result = invoke("diff", a[:5], a, "--results", results)
    assert result.exit_code == 2 and "is ambiguous" in result.output


def test_hostile_store_text_is_shown_literally(store):
    results, a, b = store
    run = results / rd.RUNS / b
    text = (run / rd.CONFIG).read_text()
    (run / rd.CONFIG).write_text(text.replace("\nseed: 0", '\nseed: "[red]x[/red]\\e[2J"'))
    result = invoke("diff", a, b, "--results", results)
    assert result.exit_code == 0, result.output
    assert ["seed", "0", "[red]x[/red]\\x1b[2J"] in [line.split() for line in
                                                     config_section(result.output)]
    assert "\x1b" not in result.output


def test_a_symlinked_or_broken_config_is_refused(store, tmp_path_factory):
    results, a, b = store
    outside = tmp_path_factory.mktemp("outside") / "config.yaml"
    outside.write_text("secret: 1\n")
    (results / rd.RUNS / b / rd.CONFIG).unlink()
    (results / rd.RUNS / b / rd.CONFIG).symlink_to(outside)
    result = invoke("diff", a, b, "--results", results)
    assert result.exit_code == 2 and "secret" not in result.output, result.output
    (results / rd.RUNS / b / rd.CONFIG).unlink()
    (results / rd.RUNS / b / rd.CONFIG).write_text("a: [1, 2\n")
    result = invoke("diff", a, b, "--results", results)
    assert result.exit_code == 2 and "invalid YAML" in result.output, result.output


@pytest.mark.skipif(not (COMMITTED / rd.RUNS).is_dir(), reason="no committed results/mini")
def test_committed_iou_cells():
    a, b = load_recipe(T2).experiments("mini", rows=["iou_box", "iou_point"])
    if not all((COMMITTED / rd.RUNS / e.run_id).is_dir() for e in (a, b)):
        pytest.skip("Table 2's IoU cells are not in results/mini")
    diff = diff_runs(a.run_id, b.run_id, COMMITTED)
    assert [key for key, _, _ in diff.config] == ["model.regression.start"]
    assert {m for m, _, _ in diff.metrics} >= set(METRICS)
