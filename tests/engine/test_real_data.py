"""A short training + evaluation on real COCO images (coco-tiny: real JPEGs, grayscale images,
crowd regions, 80 non-contiguous category ids) through the public entry point."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from atss_bench.engine import run_experiment
from atss_bench.engine.evaluate import STAT_NAMES
from atss_bench.engine.monitor import read_log
from atss_bench.errors import DataError
from tests.engine.conftest import tiny_config


def test_train_and_evaluate_on_coco_tiny(coco_tiny_root: Path, tmp_path: Path) -> None:
    config = tiny_config(
        data={"kind": "coco", "min_size": [96], "max_size": 128, "test_min_size": 96,
              "val_images": 6},
        # a low score threshold so that a 4-iteration model still emits detections
        model={"test": {"score_thresh": 0.0, "detections_per_img": 20}},
        train={"max_iter": 4, "checkpoint_period": 4},
    )
    result = run_experiment(config, tmp_path, data_root=str(coco_tiny_root), progress=False)
    metrics, provenance = result["metrics"], result["provenance"]
    assert list(metrics) == list(STAT_NAMES)
    assert all(math.isnan(v) or 0.0 <= v <= 100.0 for v in metrics.values())
    assert provenance["evaluator"] in ("faster_coco_eval", "pycocotools")
    assert provenance["num_val_images"] == 6
    assert provenance["num_detections"] == 6 * 20
    assert provenance["iterations"] == 4 and provenance["resumed_from"] is None
    assert provenance["device"] == "cpu" and provenance["world_size"] == 1
    assert provenance["images_per_sec"] > 0 and provenance["eval_seconds"] > 0
    log = read_log(tmp_path / "log.jsonl")
    assert log[-1]["eval"] == pytest.approx(metrics, nan_ok=True)
    assert log[0]["iter"] == 4 and math.isfinite(log[0]["loss"])
    assert (tmp_path / "checkpoints" / "ckpt_00000004.pt").is_file()

    # Started again on a finished run: resumes at max_iter, trains nothing, same metrics.
    again = run_experiment(config, tmp_path, data_root=str(coco_tiny_root), progress=False)
    assert again["provenance"]["resumed_from"] == 4
    assert again["provenance"]["iterations_this_session"] == 0
    assert again["metrics"] == pytest.approx(metrics, nan_ok=True)


def test_coco_without_a_root_is_a_data_error(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATSS_BENCH_DATA", raising=False)
    with pytest.raises(DataError, match="no COCO dataset root") as error:
        run_experiment(tiny_config(data={"kind": "coco"}), tmp_path, progress=False)
    assert "ATSS_BENCH_DATA" in (error.value.hint or "")
