"""`atss-bench inspect-assign` through typer's CliRunner."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from inspect_helpers import COCO_TINY, random_coco, write_coco
from PIL import Image
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.inspect import RULES

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, ["inspect-assign", *args])


def _dataset(tmp_path):
    root = random_coco(tmp_path / "data", num_images=5, seed=1)
    # the same annotations, now with image files for the pictures
    payload = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    return write_coco(root, payload["images"], payload["annotations"], image_files=True)


def test_all_rules_tables_and_pictures(tmp_path):
    root = _dataset(tmp_path)
    out = tmp_path / "out"
    result = _invoke("--data-root", str(root), "--profile", "mini", "--out", str(out))
    assert result.exit_code == 0, result.output
    for rule in RULES:
        assert rule in result.output
    assert "w/h >=3" in result.output and "P7%" in result.output
    frame = pd.read_csv(out / "assign-val2017-mini.csv")
    assert len(frame) == 4 * 9 and list(frame.rule.unique()) == list(RULES)
    assert frame[frame.group == "all"].gts.nunique() == 1
    markdown = (out / "assign-val2017-mini.md").read_text()
    assert markdown.startswith("# Sample selection on data val2017")
    assert "atss: topk=9, num_anchors_per_location=1" in markdown
    assert markdown.count("\n| atss |") == 9
    pictures = sorted(out.glob("*.png"))
    assert [p.name for p in pictures] == ["assign-val2017-mini-13.png", "assign-val2017-mini-3.png"]
    with Image.open(pictures[0]) as picture:
        assert picture.size[0] >= 900 and picture.size[1] >= 500


def test_one_rule_with_its_own_parameter_and_an_image_id(tmp_path):
    root = _dataset(tmp_path)
    result = _invoke("--data-root", str(root), "--profile", "mini", "--rules", "atss",
                     "--set", "model.assign.topk=3", "--image-id", "23", "--out",
                     str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert "atss: topk=3" in (tmp_path / "o" / "assign-val2017-mini.md").read_text()
    assert [p.name for p in (tmp_path / "o").glob("*.png")] == ["assign-val2017-mini-23.png"]


def test_data_mini_uses_the_profile_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("ATSS_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    result = _invoke("--data", "mini", "--set", "data.mini.num_train=1",
                     "--set", "data.mini.num_val=6", "--images", "1", "--rules", "fcos,atss")
    assert result.exit_code == 0, result.output
    folders = list((tmp_path / "results" / "inspect").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("mini-coco-")
    assert len(list(folders[0].glob("*.png"))) == 1
    frame = pd.read_csv(folders[0] / "assign-val2017-mini.csv")
    assert list(frame.rule.unique()) == ["fcos", "atss"]


@pytest.mark.skipif(not COCO_TINY.is_dir(), reason=f"no real COCO sample at {COCO_TINY} "
                                                   "(set ATSS_BENCH_TEST_COCO)")
def test_real_coco_sample(tmp_path):
    result = _invoke("--data-root", str(COCO_TINY), "--images", "1", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "assign-val2017-full.csv")
    everything = frame[frame.group == "all"].set_index("rule")
    assert (everything.gts > 500).all()
    by_size = frame[frame.group == "size"].set_index(["rule", "bin"])
    for rule in RULES:  # every rule sends small GTs to P3 and large ones to P5 and above
        assert by_size.loc[(rule, "small"), "P3_pct"] > 75
        large = by_size.loc[(rule, "large")]
        assert large.P5_pct + large.P6_pct + large.P7_pct > 90
    # ATSS: about k = 9 positives per GT whatever its size, almost no GT left without
    assert (by_size.loc["atss"].pos_per_gt_median == 9.0).all()
    assert everything.loc["atss", "zero_pos_pct"] < 1
    assert len(list(tmp_path.glob("*.png"))) == 1


@pytest.mark.parametrize("args, message", [
    (["--data-root", "{tmp}/nowhere"], "does not exist"),
    (["--rules", "atss,iou"], "unknown rule 'iou'"),
    (["--image-id", "4"], "no image with id 4"),
    (["--set", "model.assign.topk=3"], "tunes one rule"),
    (["--set", "model.assign.strategy=fcos", "--rules", "atss"], "choose rules with --rules"),
    (["--data", "imagenet"], "--data 'imagenet'"),
])
def test_user_mistakes_are_one_line(tmp_path, args, message):
    root = _dataset(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--data-root" not in args and "--data" not in args:
        args = ["--data-root", str(root), *args]
    result = _invoke(*args, "--profile", "mini", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output


@pytest.mark.parametrize("content", [
    "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser goes
    '{"images": "x", "annotations": 5, "categories": [1]}',  # wrong types
])
def test_a_hostile_annotation_file_is_one_line(tmp_path, content):
    root = _dataset(tmp_path)
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(content)
    result = _invoke("--data-root", str(root), "--images", "1", "--profile", "mini",
                     "--out", str(tmp_path / "o"))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert str(path) in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
