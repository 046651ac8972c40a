"""Checkpoint files: round trip, pruning that keeps readable ones, corrupt, planted or special
files detected and skipped (never unpickled as code)."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from atss_bench.engine.checkpoint import (MAGIC, capture_rng_state, list_checkpoints,
                                          load_checkpoint, load_latest_checkpoint,
                                          restore_rng_state, save_checkpoint)
from atss_bench.engine.solver import WarmupMultiStepLR
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


def _garble(path: Path) -> None:
    data = path.read_bytes()
    pos = len(data) - 100
    path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])


def _iterations(directory: Path) -> list[int]:
    return [i for i, _ in list_checkpoints(directory)]


def test_unreadable_newer_checkpoints_never_evict_new_ones(tmp_path: Path) -> None:
    """Issue 13: ckpt 5000 and 7500 corrupt; the restarted run kept deleting what it wrote."""
    for iteration in (5000, 7500):
        _garble(save_checkpoint(tmp_path, iteration, _state(iteration)))
    assert load_latest_checkpoint(tmp_path) is None  # fresh start
    save_checkpoint(tmp_path, 2500, _state(2500))
    assert _iterations(tmp_path) == [2500]  # corrupt ones deleted, the new one kept
    save_checkpoint(tmp_path, 5000, _state(5000))
    assert _iterations(tmp_path) == [2500, 5000]
    save_checkpoint(tmp_path, 7500, _state(7500))
    assert _iterations(tmp_path) == [5000, 7500]
    assert load_latest_checkpoint(tmp_path)[1]["iteration"] == 7500


def test_keep_one_never_deletes_the_checkpoint_just_written(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 20, _state(20), keep=1)
    written = save_checkpoint(tmp_path, 10, _state(10), keep=1)  # lower than a readable one
    assert _iterations(tmp_path) == [10]
    assert load_checkpoint(written)["iteration"] == 10
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path, 30, _state(30), keep=0)


class _PlantedCode:
    """Unpickling this creates ``marker`` (stands for any code a planted file would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: D105
        return (open, (self.marker, "w"))


def _plant(path: Path, payload: bytes) -> None:
    """A file with our header and a *valid* checksum: an attacker can compute sha256 too."""
    digest = hashlib.sha256(payload).hexdigest().encode()
    path.write_bytes(MAGIC + digest + b"\n" + payload)


def _malicious_payload(kind: str, marker: Path) -> bytes:
    if kind == "raw-pickle":  # torch's legacy, non-zip format path
        return pickle.dumps({"iteration": 1, "model": _PlantedCode(marker)})
    buffer = io.BytesIO()
    torch.save({"iteration": 1, "model": _PlantedCode(marker)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["torch-zip", "raw-pickle"])
def test_planted_pickle_never_runs(tmp_path: Path, kind: str) -> None:
    ckpt_dir, marker = tmp_path / "checkpoints", tmp_path / "PWNED"
    control = tmp_path / "control"  # the same payload does run code when unpickled unsafely
    live = _malicious_payload(kind, control)
    pickle.loads(live) if kind == "raw-pickle" else torch.load(io.BytesIO(live), weights_only=False)
    assert control.exists()

    save_checkpoint(ckpt_dir, 10, _state(10))
    planted = ckpt_dir / "ckpt_99999999.pt"
    _plant(planted, _malicious_payload(kind, marker))
    with pytest.raises(TrainingError, match="unreadable checkpoint"):
        load_checkpoint(planted)
    path, state = load_latest_checkpoint(ckpt_dir)
    assert (path.name, state["iteration"]) == ("ckpt_00000010.pt", 10)
    save_checkpoint(ckpt_dir, 20, _state(20))
    save_checkpoint(ckpt_dir, 30, _state(30))
    # refused, not counted as kept (10 goes, 20 stays), not ours to delete
    assert _iterations(ckpt_dir) == [20, 30, 99999999]
    assert not marker.exists()


def test_special_files_named_like_checkpoints_are_skipped(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 10, _state(10))
    os.mkfifo(tmp_path / "ckpt_00000020.pt")  # reading it would block forever
    outside = save_checkpoint(tmp_path / "elsewhere", 1, _state(1))
    (tmp_path / "ckpt_00000030.pt").symlink_to(outside)
    with pytest.raises(TrainingError, match="not a regular file"):
        load_checkpoint(tmp_path / "ckpt_00000020.pt")
    with pytest.raises(TrainingError, match="symbolic link"):
        load_checkpoint(tmp_path / "ckpt_00000030.pt")
    assert load_latest_checkpoint(tmp_path)[1]["iteration"] == 10
    save_checkpoint(tmp_path, 40, _state(40))
    save_checkpoint(tmp_path, 50, _state(50))
    assert _iterations(tmp_path) == [20, 30, 40, 50]  # the FIFO and the link are left alone
    assert outside.exists()


def test_training_state_loads_with_weights_only(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything the engine's checkpointer saves is plain data for ``weights_only=True``."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler = WarmupMultiStepLR(optimizer, steps=[3, 5])
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = {"format": 1, "iteration": 3, "config_hash": "abc", "world_size": 1,
             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
             "rng": [capture_rng_state()], "sampler": {"seed": 0, "grouped": True, "position": 6}}
    path = save_checkpoint(tmp_path, 3, state)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    loaded = load_checkpoint(path)
    assert [k["weights_only"] for k in calls] == [True]
    assert loaded["scheduler"]["steps"] == [3, 5] and loaded["sampler"]["position"] == 6
    assert torch.equal(loaded["optimizer"]["state"][0]["momentum_buffer"],
                       optimizer.state_dict()["state"][0]["momentum_buffer"])
