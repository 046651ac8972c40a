"""`atss-bench check-rule`: exit 0 on a kept contract, 1 with the failing scene, 2 on bad input."""
from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from atss_bench.cli.main import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
FAST = ["--scenes", "2", "--images", "1"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_the_example_rule_passes():
    result = invoke("check-rule", f"{REPO}/examples/my_rule.py:assign_atss_floor", *FAST)
    assert result.exit_code == 0, result.output
    assert "FAILED" not in result.output
    assert "ok  no positives without GTs" in result.output


def test_a_builtin_rule_with_a_param_passes():
    result = invoke("check-rule", "task_aligned", "--param", "topk=5", *FAST)
    assert result.exit_code == 0, result.output


def test_the_broken_example_fails_with_its_minimal_scene():
    result = invoke("check-rule", f"{REPO}/examples/broken_rule.py:assign_nearest", *FAST)
    assert result.exit_code == 1, result.output
    assert "FAILED  no positives without GTs" in result.output
    assert "minimal failing scene: random scene 0 (seed 0): image 320x416" in result.output
    assert "0 GT(s)" in result.output


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    for args, words in [
        (("check-rule", f"{REPO}/examples/my_rule.py:assign_atss_floor", "--param", "k=3"),
         "unknown param 'k'"),
        (("check-rule", "no_such_pkg_xyz.rules:fn"), "cannot import no_such_pkg_xyz.rules"),
        (("check-rule", "atss", "--coco", tmp_path), "no annotations/instances_val2017.json"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0], result.output
