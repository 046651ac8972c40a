"""Plain progress off a terminal: exact line formats, one line per log period and per evaluation
phase, nothing plain on a terminal, nothing at all without ``progress``."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from atss_bench.engine import monitor
from atss_bench.engine.distributed import DistInfo
from atss_bench.engine.monitor import (EvalProgress, TrainProgress, eval_line, format_duration,
                                       train_line)
from atss_bench.engine.train import train_loop


@pytest.mark.parametrize("seconds, text", [
    (0, "0:00:00"), (59.99, "0:00:59"), (61, "0:01:01"), (3725.9, "1:02:05"),
    (36000, "10:00:00"), (-3, "0:00:00"), (float("inf"), "-:--:--"), (float("nan"), "-:--:--"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_train_line_exact() -> None:
    assert (train_line("94cf5c6aba7d", 20, 1200, 1.23456, 0.004, 2.5)
            == "[94cf5c6aba7d] train 20/1200 loss 1.2346 lr 4.00e-03 2.50 it/s ETA 0:07:52")
    assert (train_line("", 1200, 1200, 0.5, 4e-5, 7.125)
            == "train 1200/1200 loss 0.5000 lr 4.00e-05 7.12 it/s ETA 0:00:00")
    assert (train_line("r", 3, 10, float("nan"), 0.01, 0.0)
            == "[r] train 3/10 loss nan lr 1.00e-02 0.00 it/s ETA -:--:--")


def test_eval_line_exact() -> None:
    assert (eval_line("94cf5c6aba7d", 1, 2, "predict 256px", "150/150 images", 10.24)
            == "[94cf5c6aba7d] eval 1/2 predict 256px: 150/150 images 10.2s")
    assert eval_line("", 2, 2, "COCOeval", "0 detections", 0.04) == \
        "eval 2/2 COCOeval: 0 detections 0.0s"


def test_eval_progress_one_line_per_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 100.0, 112.25, 112.75])
    monkeypatch.setattr(monitor.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    progress = EvalProgress(True, label="abc", plain=True, stream=stream)
    progress.begin(2)
    progress.phase("predict 256px", "150/150 images")
    progress.phase("COCOeval", "15000 detections")
    assert stream.getvalue().splitlines() == [
        "[abc] eval 1/2 predict 256px: 150/150 images 12.2s",
        "[abc] eval 2/2 COCOeval: 15000 detections 0.5s",
    ]


def test_eval_progress_silent_when_disabled_or_on_a_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(monitor, "stdout_is_terminal", lambda: True)
    for progress in (EvalProgress(False, plain=True, stream=stream),
                     EvalProgress(True, stream=stream)):
        progress.begin(1)
        progress.phase("COCOeval", "1 detections")
    assert stream.getvalue() == ""


class _Toy(nn.Module):
    """loss = (w - 3)^2: with SGD lr 0.1 every loss is known in advance."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, images, targets):
        return {"loss_toy": (self.w - 3) ** 2}


def _batches():
    while True:
        yield [torch.zeros(3, 4, 4)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}]


def _train(max_iter: int, progress: bool, log_period: int = 2) -> None:
    model = _Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    train_loop(model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False),
               _batches(), start_iter=0, max_iter=max_iter, images_per_batch=1,
               dist_info=DistInfo(), amp=False, checkpoint_period=100, progress=progress,
               log_period=log_period, progress_label="run1")


def _expected_losses(max_iter: int) -> list[float]:
    w, losses = torch.zeros(()), []
    for _ in range(max_iter):
        losses.append(float((w - 3) ** 2))
        w = w - 0.1 * 2 * (w - 3)
    return losses


LINE = re.compile(r"^\[run1\] train (\d+)/7 loss (\S+) lr 1\.00e-01 (\d+\.\d\d) it/s "
                  r"ETA (\d+:\d\d:\d\d)$")


def test_off_a_terminal_train_loop_prints_one_line_per_log_period(
        capsys: pytest.CaptureFixture[str]) -> None:
    """pytest's captured stdout is not a terminal: the loop's progress comes as plain lines."""
    _train(7, progress=True)
    lines = capsys.readouterr().out.splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    losses = _expected_losses(7)
    assert [int(m.group(1)) for m in matches] == [2, 4, 6, 7]
    assert [m.group(2) for m in matches] == [f"{losses[i - 1]:.4f}" for i in (2, 4, 6, 7)]
    assert matches[-1].group(4) == "0:00:00"  # nothing left at the end


def test_no_plain_lines_without_progress_or_on_a_terminal(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _train(4, progress=False)
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(monitor, "stdout_is_terminal", lambda: True)
    assert not TrainProgress(True, 4, 0).plain  # a terminal gets the rich bar instead
    _train(4, progress=True)
    assert "[run1]" not in capsys.readouterr().out


def test_stdout_is_terminal_false_for_a_closed_or_fileless_stdout(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    closed = open(tmp_path / "out.txt", "w")  # noqa: SIM115
    closed.close()
    monkeypatch.setattr(monitor.sys, "stdout", closed)
    assert monitor.stdout_is_terminal() is False
    monkeypatch.setattr(monitor.sys, "stdout", object())
    assert monitor.stdout_is_terminal() is False
