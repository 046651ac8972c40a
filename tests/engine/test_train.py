"""The training loop: NaN guard, log lines, checkpoint calls."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from atss_bench.engine import run_experiment, runner
from atss_bench.engine.checkpoint import list_checkpoints, load_checkpoint
from atss_bench.engine.distributed import DistInfo
from atss_bench.engine.monitor import JsonlLog, read_log
from atss_bench.engine.train import train_loop
from atss_bench.errors import TrainingError
from tests.engine.conftest import tiny_config


class _Toy(nn.Module):
    """loss = (w - 3)^2, except NaN (or inf) on call number ``bad_call``."""

    def __init__(self, bad_call: int, bad: float = float("nan")) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(()))
        self.calls, self.bad_call, self.bad = 0, bad_call, bad

    def forward(self, images, targets):
        self.calls += 1
        loss = (self.w - 3) ** 2 + self.bias ** 2
        if self.calls == self.bad_call:
            loss = loss * self.bad
        return {"loss_toy": loss, "loss_zero": self.w * 0}


def _batches():
    while True:
        yield [torch.zeros(3, 4, 4)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}]


def _loop(model: nn.Module, max_iter: int, **kwargs):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return train_loop(model, optimizer, scheduler, scaler, _batches(), start_iter=0,
                      max_iter=max_iter, images_per_batch=1, dist_info=DistInfo(), amp=False,
                      **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_with_the_iteration(bad: float) -> None:
    model = _Toy(bad_call=4, bad=bad)
    saved: list[int] = []
    with pytest.raises(TrainingError, match=r"non-finite loss at iter 4: \{.*loss_toy="):
        _loop(model, 10, checkpoint_period=2, save_checkpoint=saved.append)
    assert saved == [2]
    # the guard fires before the update: w is what 3 updates made it
    w = 0.0
    for _ in range(3):
        w -= 0.1 * 2 * (w - 3)
    assert model.w.item() == pytest.approx(w)


def test_log_lines_and_checkpoint_calls(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "log.jsonl")
    saved: list[int] = []
    result = _loop(_Toy(bad_call=-1), 7, checkpoint_period=3, save_checkpoint=saved.append,
                   log=log, log_period=2)
    assert saved == [3, 6, 7]
    records = read_log(tmp_path / "log.jsonl")
    assert [r["iter"] for r in records] == [2, 4, 6, 7]
    for record in records:
        assert {"iter", "max_iter", "loss", "loss_toy", "loss_zero", "lr", "time", "it/s"} <= set(record)
        assert record["loss"] == pytest.approx(record["loss_toy"])
    assert result.iterations == 7 and result.images_per_sec > 0


def test_run_experiment_nan_keeps_last_good_checkpoint(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A detector whose loss turns NaN at its 5th call: the run fails with the iteration, and the
    checkpoint of iteration 3 (written before) is intact."""
    real_build = runner.build_detector

    def build_poisoned(model_config, num_classes):
        model = real_build(model_config, num_classes)
        forward, calls = model.forward, [0]

        def poisoned(images, targets=None):
            out = forward(images, targets)
            if model.training:
                calls[0] += 1
                if calls[0] == 5:
                    out = {k: v * float("nan") for k, v in out.items()}
            return out

        model.forward = poisoned
        return model

    monkeypatch.setattr(runner, "build_detector", build_poisoned)
    with pytest.raises(TrainingError, match="non-finite loss at iter 5"):
        run_experiment(tiny_config(), tmp_path, progress=False)
    checkpoints = list_checkpoints(tmp_path / "checkpoints")
    assert [i for i, _ in checkpoints] == [3]
    state = load_checkpoint(checkpoints[0][1])
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_cpu_thread_budget_leaves_a_core_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: set(range(8)))
    before = torch.get_num_threads()
    cpu = torch.device("cpu")
    with runner.cpu_thread_budget(cpu, num_workers=2) as threads:
        assert threads == torch.get_num_threads() == 6
    assert torch.get_num_threads() == before
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 processes share the 8 cores
    with runner.cpu_thread_budget(cpu, num_workers=1) as threads:
        assert threads == 1
    with runner.cpu_thread_budget(torch.device("cuda"), num_workers=2) as threads:
        assert threads == before  # never touched on GPU
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with runner.cpu_thread_budget(cpu, num_workers=2) as threads:
        assert threads == before  # the user's setting wins


def test_log_truncated_on_resume(tmp_path: Path) -> None:
    """Lines a killed run wrote after its last checkpoint (and a half-written last line) go."""
    log = JsonlLog(tmp_path / "log.jsonl")
    for iteration in (2, 4, 6, 8):
        log.write({"iter": iteration, "max_iter": 10, "loss": 1.0})
    log.write({"iter": 10, "eval": {"AP": 1.0}})
    with open(tmp_path / "log.jsonl", "a") as handle:
        handle.write('{"iter": 12, "lo')
    log.truncate_after(6)
    assert [r["iter"] for r in read_log(tmp_path / "log.jsonl")] == [2, 4, 6]
    log.truncate_after(0)
    assert read_log(tmp_path / "log.jsonl") == []
