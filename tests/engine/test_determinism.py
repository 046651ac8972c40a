"""Same run id, same machine => the same weights and metrics, bit for bit, whatever the loading
path: cached or decoded images, loading in a worker process or in the training process."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from atss_bench.engine import loaders, run_experiment
from atss_bench.engine.checkpoint import list_checkpoints, load_checkpoint
from tests.engine.conftest import tiny_config

MAX_ITER = 4


def _config(num_workers: int):
    return tiny_config(data={"min_size": [48, 64], "num_workers": num_workers},
                       train={"max_iter": MAX_ITER, "checkpoint_period": MAX_ITER})


def _train(run_dir: Path, num_workers: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    result = run_experiment(_config(num_workers), run_dir, progress=False)
    iteration, path = list_checkpoints(run_dir / "checkpoints")[-1]
    assert iteration == MAX_ITER
    return load_checkpoint(path)["model"], result["metrics"]


def _assert_identical(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    (weights_a, metrics_a), (weights_b, metrics_b) = a, b
    assert weights_a.keys() == weights_b.keys()
    different = [name for name in weights_a if not torch.equal(weights_a[name], weights_b[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert metrics_a.keys() == metrics_b.keys()
    for name in metrics_a:  # exact, NaN (no GT in an area range) included
        assert (metrics_a[name] == metrics_b[name]
                or (math.isnan(metrics_a[name]) and math.isnan(metrics_b[name]))), name


@pytest.fixture(scope="module")
def decoded_in_process(tmp_path_factory: pytest.TempPathFactory):
    """The reference: images decoded every time (no cache), in the training process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loaders, "TRAIN_IMAGE_CACHE_BYTES", 0)
        return _train(tmp_path_factory.mktemp("decoded"), num_workers=0)


def test_same_run_id_twice_same_weights_cache_or_not(decoded_in_process, tmp_path: Path) -> None:
    """The same config (run id) again, now with the image cache on (the engine's default)."""
    _assert_identical(_train(tmp_path / "cached", num_workers=0), decoded_in_process)


def test_a_loader_worker_trains_the_same_weights(decoded_in_process, tmp_path: Path) -> None:
    """The worker process holds the cache in training: still the reference, bit for bit."""
    _assert_identical(_train(tmp_path / "worker", num_workers=1), decoded_in_process)
