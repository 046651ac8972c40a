"""Which device a run trains on, and that a run never moves between CPU and CUDA."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import atss_bench.engine.distributed as distributed
from atss_bench.devices import DEVICE_ENV, requested_device
from atss_bench.engine.checkpoint import load_latest_checkpoint, save_checkpoint
from atss_bench.engine.runner import _check_checkpoint_device, run_experiment
from atss_bench.errors import ConfigError, TrainingError
from tests.engine.conftest import tiny_config


@pytest.mark.parametrize(("value", "device"), [
    (None, "auto"), ("", "auto"), ("  ", "auto"), ("cpu", "cpu"), (" CUDA\n", "cuda"),
    ("auto", "auto")])
def test_the_requested_device_comes_from_the_environment(value: str | None, device: str) -> None:
    assert requested_device({} if value is None else {DEVICE_ENV: value}) == device


@pytest.mark.parametrize("value", ["gpu", "cuda:1", "cpu;rm -rf /", "x" * 10_000])
def test_anything_else_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        requested_device({DEVICE_ENV: value})
    assert caught.value.message.startswith(f"{DEVICE_ENV}=") and len(caught.value.message) < 100
    assert caught.value.hint == "one of auto, cpu, cuda"


def _gpu_present(monkeypatch: pytest.MonkeyPatch, present: bool) -> list[int]:
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: chosen[-1])
    return chosen


def test_cpu_stays_on_cpu_where_a_gpu_is_present(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _gpu_present(monkeypatch, True)
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert distributed._device_for(1) == torch.device("cpu") and chosen == []
    monkeypatch.setenv(DEVICE_ENV, "auto")
    assert distributed._device_for(3) == torch.device("cuda", 1) and chosen == [1]


def test_cuda_without_a_gpu_is_an_error_and_auto_falls_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu_present(monkeypatch, False)
    monkeypatch.setenv(DEVICE_ENV, "auto")
    assert distributed._device_for(0) == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(ConfigError, match=f"^{DEVICE_ENV}=cuda, but torch sees no CUDA GPU"):
        distributed._device_for(0)


def test_a_checkpoint_resumes_only_on_its_own_kind_of_device() -> None:
    cpu = torch.device("cpu")
    for state in ({}, {"device": None}, {"device": "cpu"}):  # {}: made before devices were kept
        _check_checkpoint_device(state, cpu)
    _check_checkpoint_device({"device": "cuda"}, torch.device("cuda", 0))
    with pytest.raises(TrainingError) as caught:
        _check_checkpoint_device({"device": "cuda"}, cpu)
    assert caught.value.message == ("the checkpoint in this run directory was trained on cuda, "
                                    "not on cpu: resuming it here would mix two devices' "
                                    "arithmetic in one run")
    assert caught.value.hint == "--device cuda resumes it where it started, --force retrains it on cpu"
    with pytest.raises(TrainingError) as caught:  # whatever a checkpoint says is data
        _check_checkpoint_device({"device": "[red]x\n" * 500}, cpu)
    assert "\n" not in caught.value.message and len(caught.value.message) < 400
    assert caught.value.hint == "--force retrains it on cpu"


def test_a_run_records_its_device_and_refuses_to_resume_a_cuda_checkpoint_on_cpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    config = tiny_config(train={"max_iter": 3, "checkpoint_period": 3, "steps": [2]})
    run_experiment(config, tmp_path, progress=False)
    path, state = load_latest_checkpoint(tmp_path / "checkpoints")
    assert state["device"] == "cpu" and state["iteration"] == 3
    path.unlink()
    save_checkpoint(tmp_path / "checkpoints", 3, {**state, "device": "cuda"})
    with pytest.raises(TrainingError, match="trained on cuda, not on cpu"):
        run_experiment(config, tmp_path, progress=False)
