"""Checkpoint files: round trip, keep-last-2, corrupt or partial files detected and skipped."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from atss_bench.engine.checkpoint import (capture_rng_state, list_checkpoints, load_checkpoint,
                                          load_latest_checkpoint, restore_rng_state,
                                          save_checkpoint)
from atss_bench.errors import TrainingError


def _state(value: float) -> dict:
    return {"iteration": int(value), "model": {"w": torch.full((3, 3), value)}}


def test_round_trip_and_keep_last_two(tmp_path: Path) -> None:
    for iteration in (10, 20, 30):
        save_checkpoint(tmp_path, iteration, _state(iteration))
    assert [i for i, _ in list_checkpoints(tmp_path)] == [20, 30]
    path, state = load_latest_checkpoint(tmp_path)
    assert path.name == "ckpt_00000030.pt"
    assert torch.equal(state["model"]["w"], torch.full((3, 3), 30.0))
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty", "foreign"])
def test_corrupt_latest_is_skipped_never_loaded(tmp_path: Path, damage: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, 10, _state(10))
    latest = save_checkpoint(tmp_path, 20, _state(20))
    data = latest.read_bytes()
    if damage == "truncate":  # e.g. a copy cut short
        latest.write_bytes(data[: len(data) // 2])
    elif damage == "garble":  # one flipped byte in the payload
        pos = len(data) - 100
        latest.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    elif damage == "empty":
        latest.write_bytes(b"")
    else:
        torch.save(_state(99), latest)  # a plain torch file without our header
    loaded = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loaded.append(1) or real_load(*a, **k))
    with pytest.raises(TrainingError):
        load_checkpoint(latest)
    assert loaded == []  # rejected before unpickling
    path, state = load_latest_checkpoint(tmp_path)
    assert path.name == "ckpt_00000010.pt"
    assert state["iteration"] == 10


def test_all_corrupt_means_fresh_start(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 5, _state(5))
    path.write_bytes(path.read_bytes()[:-1])
    assert load_latest_checkpoint(tmp_path) is None
    assert load_latest_checkpoint(tmp_path / "missing") is None


def test_stale_temporary_files_are_ignored_and_cleaned(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, _state(1))
    stale = tmp_path / ".ckpt_00000002.pt.tmp.999999"
    stale.write_bytes(b"half a checkpoint")
    assert load_latest_checkpoint(tmp_path)[0].name == "ckpt_00000001.pt"
    save_checkpoint(tmp_path, 2, _state(2))
    assert not stale.exists()


def test_rng_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path, 1, {"rng": capture_rng_state()})
    expected = (torch.rand(4), random.random(), np.random.randn(3))
    torch.manual_seed(2)
    random.seed(2)
    np.random.seed(2)
    restore_rng_state(load_checkpoint(tmp_path / "ckpt_00000001.pt")["rng"])
    got = (torch.rand(4), random.random(), np.random.randn(3))
    assert torch.equal(got[0], expected[0])
    assert got[1] == expected[1]
    assert np.array_equal(got[2], expected[2])
    assert os.listdir(tmp_path) == ["ckpt_00000001.pt"]
