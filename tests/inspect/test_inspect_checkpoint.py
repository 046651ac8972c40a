"""`inspect-assign --checkpoint`: prediction-aware rules get a trained run's model outputs.

A tiny mini-profile detector (narrow FPN and head, the profile's anchors) is saved through the
engine's own checkpoint writer into a run folder laid out as the store writes it.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from inspect_helpers import write_coco
from typer.testing import CliRunner

from atss_bench.assign import assign, table
from atss_bench.cli.main import app
from atss_bench.config import ExperimentConfig, config_hash
from atss_bench.data import CocoDetection
from atss_bench.engine.checkpoint import save_checkpoint
from atss_bench.inspect import resolve_rule_configs
from atss_bench.inspect.anchors import anchors_for_padded_size, build_anchor_settings, padded_size
from atss_bench.inspect.run import run_inspection
from atss_bench.inspect.trained import load_trained_model
from atss_bench.job import rundir as rd
from atss_bench.model import build_assigner, build_detector

runner = CliRunner()
TINY = {"model.fpn.channels": 8, "model.head.channels": 8, "model.head.num_convs": 1}
RULES3 = "atss,task_aligned,simota"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(root: Path) -> Path:
    """Three small images, two categories (so labels 0 and 1 both occur)."""
    images = [{"id": 3, "height": 60, "width": 80}, {"id": 7, "height": 80, "width": 60},
              {"id": 9, "height": 64, "width": 64}]
    boxes = [(3, [5, 6, 30, 20], 1), (3, [40, 10, 30, 40], 2), (7, [10, 10, 20, 50], 2),
             (9, [0, 0, 64, 64], 1), (9, [20, 24, 10, 8], 2)]
    annotations = [{"image_id": i, "bbox": b, "category_id": c} for i, b, c in boxes]
    return write_coco(root, images, annotations, image_files=True)


def _run_config(**extra: object) -> ExperimentConfig:
    return resolve_rule_configs("mini", ["atss"], {**TINY, **extra})["atss"]


def _write_run(results: Path, config: ExperimentConfig, num_classes: int = 2,
               hash_of: ExperimentConfig | None = None) -> Path:
    """results/runs/<run id>/ with config.yaml and a checkpoint at iteration 3."""
    run_dir = rd.run_dir_for(results, config_hash(config))
    run_dir.mkdir(parents=True)
    rd.atomic_write_text(run_dir / rd.CONFIG,
                         yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    torch.manual_seed(0)
    detector = build_detector(config.model, num_classes)
    state = {"format": 1, "iteration": 3, "config_hash": config_hash(hash_of or config),
             "model": detector.state_dict()}
    save_checkpoint(run_dir / rd.CHECKPOINTS, 3, state)
    return run_dir


def _invoke(*args: str):
    return runner.invoke(app, ["inspect-assign", "--profile", "mini", *args])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    base = tmp_path_factory.mktemp("store")
    return _data(base / "data"), _write_run(base / "results", _run_config())


def _recording(monkeypatch, strategy: str) -> list[dict]:
    """Replace a built-in rule by a wrapper that records what it receives (same signature)."""
    calls: list[dict] = []
    original = table.ASSIGNERS[strategy]

    @functools.wraps(original)
    def recorder(anchors, num_anchors_per_level, gt_boxes, gt_valid, **kwargs):
        calls.append({"anchors": anchors, "gt_boxes": gt_boxes, **kwargs})
        return original(anchors, num_anchors_per_level, gt_boxes, gt_valid, **kwargs)

    monkeypatch.setitem(table.ASSIGNERS, strategy, recorder)
    return calls


def _direct_outputs(model, dataset: CocoDetection, config: ExperimentConfig, image_id: int):
    """(labels, sigmoid scores, boxes decoded by the detector's coder) computed by hand."""
    image, target = dataset[dataset.ids.index(image_id)]
    detector = model.detector
    with torch.no_grad():
        batch, _ = detector.preprocess([image])
        outputs = detector.head(detector.fpn(detector.backbone(batch)))
    size = padded_size(image.shape[1], image.shape[2], config.data.size_divisibility)
    anchors = anchors_for_padded_size(build_anchor_settings(config.model), size)
    strides = torch.tensor(anchors.strides, dtype=torch.float32)[anchors.levels]
    reg = torch.cat(outputs.reg, 1)[0]
    boxes = detector.coder.decode(reg, anchors.anchors, strides)
    return target["labels"], torch.cat(outputs.cls, 1)[0].sigmoid(), boxes, anchors


def test_prediction_aware_rules_receive_the_model_outputs(store, monkeypatch, tmp_path):
    root, run_dir = store
    calls = _recording(monkeypatch, "task_aligned")
    configs = resolve_rule_configs("mini", RULES3.split(","), with_model=True)
    model = load_trained_model(run_dir)
    assert model.iteration == 3 and not model.detector.training and model.num_classes == 2
    result = run_inspection(root, "val2017", configs, tmp_path / "out", num_images=1,
                            model=model)
    assert len(calls) == 3 + 1  # every image with GTs for the statistics, one picture
    dataset = CocoDetection(root, "val2017", train=False, min_size=256, max_size=427,
                            remove_images_without_annotations=False)
    config = configs["task_aligned"]
    by_boxes = {}
    for image_id in (3, 7, 9):
        labels, scores, boxes, anchors = _direct_outputs(model, dataset, config, image_id)
        by_boxes[image_id] = (labels, scores, boxes, anchors)
    seen = set()
    for call in calls:
        matches = [i for i, (labels, *_rest) in by_boxes.items()
                   if len(labels) == call["gt_boxes"].shape[1]
                   and torch.equal(dataset[dataset.ids.index(i)][1]["boxes"],
                                   call["gt_boxes"][0])]
        assert len(matches) == 1
        labels, scores, boxes, anchors = by_boxes[matches[0]]
        seen.add(matches[0])
        assert torch.equal(call["anchors"], anchors.anchors)
        assert torch.equal(call["gt_labels"][0], labels)
        assert torch.equal(call["pred_scores"][0], scores)
        assert torch.equal(call["pred_boxes"][0], boxes)
    assert seen == {3, 7, 9}
    assert sorted(torch.unique(torch.cat([c["gt_labels"][0] for c in calls])).tolist()) == [0, 1]
    # the statistics are the rule's own answer on those inputs, image by image
    simota = build_assigner(configs["simota"].model)
    expected = 0
    for image_id, (labels, scores, boxes, anchors) in by_boxes.items():
        gt_boxes = dataset[dataset.ids.index(image_id)][1]["boxes"]
        matched = assign("simota", anchors.anchors, anchors.num_anchors_per_level, gt_boxes,
                         gt_labels=labels, pred_scores=scores, pred_boxes=boxes,
                         **simota.params)
        expected += int((matched >= 0).sum())
    frame = result.table
    row = frame[(frame.rule == "simota") & (frame.group == "all")].iloc[0]
    assert int(row.positives) == expected > 0
    assert list(frame.rule.unique()) == RULES3.split(",")
    assert f"model: run {run_dir.name} (ckpt_00000003.pt, iteration 3)" in \
        result.markdown_path.read_text()


def test_cli_three_rules_on_one_image_from_a_run_id(store, tmp_path):
    root, run_dir = store
    out = tmp_path / "out"
    result = _invoke("--data-root", str(root), "--rules", RULES3, "--image-id", "9",
                     "--checkpoint", run_dir.name, "--results", str(run_dir.parents[1]),
                     "--out", str(out))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "assign-val2017-mini.csv")
    assert list(frame.rule.unique()) == ["atss", "task_aligned", "simota"]
    assert [p.name for p in out.glob("*.png")] == ["assign-val2017-mini-9.png"]
    assert f"model: run {run_dir.name}" in result.output


def test_without_checkpoint_prediction_rules_are_refused(store, tmp_path):
    root, _ = store
    result = _invoke("--data-root", str(root), "--rules", "atss,simota", "--out",
                     str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "simota" in result.output and "--checkpoint RUN" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def _refused(root: Path, spec: str, tmp_path: Path, *words: str) -> None:
    result = _invoke("--data-root", str(root), "--rules", "task_aligned", "--checkpoint", spec,
                     "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    for word in words:
        assert word in result.output
    assert not (tmp_path / "out").exists()


def _copy_run(run_dir: Path, results: Path) -> Path:
    copy = results / rd.RUNS / run_dir.name
    (copy / rd.CHECKPOINTS).mkdir(parents=True)
    for name in (rd.CONFIG, f"{rd.CHECKPOINTS}/ckpt_00000003.pt"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    return copy


def test_hostile_checkpoint_paths(store, tmp_path):
    root, run_dir = store
    ckpt = run_dir / rd.CHECKPOINTS / "ckpt_00000003.pt"
    _refused(root, str(tmp_path / "missing"), tmp_path, "no such run")
    # a checkpoint that is a symlink out of the run folder
    linked = _copy_run(run_dir, tmp_path / "linked")
    (linked / rd.CHECKPOINTS / "ckpt_00000003.pt").unlink()
    os.symlink(ckpt, linked / rd.CHECKPOINTS / "ckpt_00000003.pt")
    _refused(root, str(linked / rd.CHECKPOINTS / "ckpt_00000003.pt"), tmp_path, "symbolic link")
    _refused(root, str(linked), tmp_path, "no readable checkpoint")
    # the run folder itself a symlink
    os.symlink(run_dir, tmp_path / "alias")
    _refused(root, str(tmp_path / "alias"), tmp_path, "symbolic link")
    # a corrupted payload: the checksum catches it before anything is unpickled
    corrupt = _copy_run(run_dir, tmp_path / "corrupt")
    path = corrupt / rd.CHECKPOINTS / "ckpt_00000003.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    _refused(root, str(path), tmp_path, "checksum mismatch")
    _refused(root, str(corrupt), tmp_path, "no readable checkpoint")
    # a checkpoint file outside a run's checkpoints/ folder
    loose = tmp_path / "loose.pt"
    loose.write_bytes(ckpt.read_bytes())
    _refused(root, str(loose), tmp_path, "checkpoints/")
    assert ckpt.read_bytes() == (run_dir / rd.CHECKPOINTS / "ckpt_00000003.pt").read_bytes()


def test_checkpoint_of_another_config_is_refused(store, tmp_path):
    root, _ = store
    run_dir = _write_run(tmp_path / "results", _run_config(),
                         hash_of=_run_config(**{"train.max_iter": 7}))
    _refused(root, str(run_dir), tmp_path, "not trained with run")


@pytest.mark.parametrize(("extra", "classes", "words"), [
    ({}, 3, ("3 classes", "data 2")),
    ({"model.anchors.scales_per_octave": 2}, 2, ("2 anchors per location", "inspection 1")),
])
def test_model_that_does_not_fit_the_inspection(store, tmp_path, extra, classes, words):
    root, _ = store
    run_dir = _write_run(tmp_path / "results", _run_config(**extra), num_classes=classes)
    _refused(root, str(run_dir), tmp_path, *words)


def test_numbers_unchanged_for_rules_without_predictions(store, tmp_path):
    root, run_dir = store
    configs = resolve_rule_configs("mini", ["atss", "fcos"])
    plain = run_inspection(root, "val2017", configs, None)
    with_model = run_inspection(root, "val2017", configs, None,
                                model=load_trained_model(run_dir))
    pd.testing.assert_frame_equal(plain.table, with_model.table)
    assert np.array_equal(plain.counts["atss"].per_level, with_model.counts["atss"].per_level)


def test_a_stored_plug_in_rule_is_never_imported(tmp_path):
    """A run whose stored config names a plug-in (a file inside the results folder) loads its
    weights for inspection without importing that file."""
    marker = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n"
                    "def rule(anchors, num_anchors_per_level, gt_boxes):\n    return None\n")
    tree = _run_config().model_dump(mode="json")
    tree["model"]["assign"] = {"strategy": f"{evil}:rule", "params": {},
                               "rule": "evil:rule",  # its true hash: nothing looks stale
                               "source_sha256": hashlib.sha256(evil.read_bytes()).hexdigest()}
    config = ExperimentConfig.model_validate(tree)
    run_dir = _write_run(tmp_path / "results", _run_config(), hash_of=config)  # ATSS's weights
    rd.atomic_write_text(run_dir / rd.CONFIG,
                         yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    model = load_trained_model(run_dir)
    assert not marker.exists()
    assert model.config.model.assign.strategy == f"{evil}:rule"  # the record itself is kept
