"""The engine checks the data before building the model and resumes only its own dataset."""
from __future__ import annotations

from pathlib import Path

import pytest

import atss_bench.engine.runner as engine_runner
from atss_bench.data.identity import DatasetIdentity
from atss_bench.engine.runner import _check_checkpoint_dataset, run_experiment
from atss_bench.errors import DataError, TrainingError
from tests.data.tiny_coco import coco_payload, write_annotations, write_tiny_coco
from tests.engine.conftest import tiny_config

COCO_CONFIG = {"kind": "coco", "val_images": None, "num_workers": 0}


@pytest.fixture()
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the data check")

    monkeypatch.setattr(engine_runner, "build_detector", refuse)


def test_a_truncated_val_image_stops_the_run_before_the_model_is_built(
        tmp_path: Path, no_model) -> None:
    root = write_tiny_coco(tmp_path / "coco")
    image = root / "val2017" / "c.jpg"
    image.write_bytes(image.read_bytes()[:-40])
    run_dir = tmp_path / "run"
    with pytest.raises(DataError, match=f"^truncated image {image} \\(split val2017\\)"):
        run_experiment(tiny_config(data=COCO_CONFIG), run_dir, data_root=str(root),
                       progress=False)
    assert not (run_dir / "checkpoints").exists()


def test_a_val_split_without_annotations_stops_the_run_before_training(
        tmp_path: Path, no_model) -> None:
    root = write_tiny_coco(tmp_path / "coco")
    write_annotations(root, "val2017", {**coco_payload("val2017"), "annotations": []})
    with pytest.raises(DataError, match="^split val2017 has no annotations in .*instances_val2017"):
        run_experiment(tiny_config(data=COCO_CONFIG), tmp_path / "run", data_root=str(root),
                       progress=False)


def _identity(kind: str, fingerprint: str) -> DatasetIdentity:
    return DatasetIdentity(kind, fingerprint, "coco-b", "/data/coco-b")


def test_a_checkpoint_resumes_only_on_its_own_dataset() -> None:
    mine = _identity("coco", "b" * 16)
    _check_checkpoint_dataset({"dataset_fingerprint": "b" * 16}, mine)
    with pytest.raises(TrainingError) as caught:
        _check_checkpoint_dataset({"dataset_fingerprint": "a" * 16}, mine)
    assert caught.value.message == (f"the checkpoint in this run directory was trained on dataset "
                                    f"{'a' * 16}, not on this dataset 'coco-b' (fingerprint "
                                    f"{'b' * 16}, at /data/coco-b)")
    assert "--force" in (caught.value.hint or "")
    for recorded in ({}, {"dataset_fingerprint": ["x"]}, {"dataset_fingerprint": None}):
        with pytest.raises(TrainingError, match="made before dataset fingerprints"):
            _check_checkpoint_dataset(recorded, mine)
    _check_checkpoint_dataset({}, _identity("mini", "c" * 16))  # mini: its spec is the config
