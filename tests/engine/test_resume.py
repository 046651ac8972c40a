"""Kill and resume: a run SIGKILLed after a checkpoint and started again on the same run_dir ends
with exactly (torch.equal) the weights of an uninterrupted run; a corrupt latest checkpoint is
skipped in favour of the previous one.

The interrupted run loads data with a worker process (num_workers=1) and the reference without,
with random flips and two training sizes: augmentation must come from (seed, epoch, index), not
from any process's RNG state, for the weights to match.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from atss_bench.engine import run_experiment, runner
from atss_bench.engine.checkpoint import list_checkpoints, load_checkpoint
from atss_bench.engine.monitor import read_log
from tests.engine.conftest import single_thread_env, tiny_config

HERE = Path(__file__).resolve().parent
MAX_ITER = 8


def _config(num_workers: int):
    return tiny_config(data={"min_size": [56, 64], "num_workers": num_workers},
                       train={"max_iter": MAX_ITER, "checkpoint_period": 3})


def _final_model(run_dir: Path) -> dict[str, torch.Tensor]:
    iteration, path = list_checkpoints(run_dir / "checkpoints")[-1]
    assert iteration == MAX_ITER
    return load_checkpoint(path)["model"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    run_dir = tmp_path_factory.mktemp("reference")
    result = run_experiment(_config(num_workers=0), run_dir, progress=False)
    assert result["provenance"]["resumed_from"] is None
    return _final_model(run_dir)


def test_sigkill_then_resume_gives_identical_weights(reference, tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "first-checkpoint"
    config_file = tmp_path / "config.json"
    config_file.write_text(_config(num_workers=1).model_dump_json())
    script = [sys.executable, str(HERE / "run_tiny.py"), str(config_file), str(run_dir)]
    proc = subprocess.Popen(script + [str(marker)], env=single_thread_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [i for i, _ in list_checkpoints(run_dir / "checkpoints")] == [3]

    done = subprocess.run(script, env=single_thread_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"resumed_from": 3' in done.stdout
    _assert_same_weights(_final_model(run_dir), reference)
    iters = [r["iter"] for r in read_log(run_dir / "log.jsonl") if "eval" not in r]
    assert iters == sorted(set(iters)) and iters[-1] == MAX_ITER


def test_corrupt_latest_checkpoint_falls_back_to_previous(reference, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = _config(num_workers=0)
    run_experiment(config, run_dir, progress=False)
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    assert [i for i, _ in checkpoints] == [6, MAX_ITER]
    latest = checkpoints[-1][1]
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) - 4096])  # a partial write
    result = run_experiment(config, run_dir, progress=False)
    assert result["provenance"]["resumed_from"] == 6
    _assert_same_weights(_final_model(run_dir), reference)


class _Requeued(Exception):
    """Stands in for submitit's USR2 handler, which requeues the job and exits."""


def test_preemption_signal_checkpoints_its_iteration_then_resumes_exactly(
        reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGUSR2 during iteration 5 (checkpoints every 3): the iteration ends, its checkpoint is
    written, then the previous handler runs; the next attempt resumes from 5, not from 3."""
    handled: list[list[int]] = []

    def submitit_like(signum, frame):
        handled.append([i for i, _ in list_checkpoints(run_dir / "checkpoints")])
        raise _Requeued

    build = runner.build_train_batches

    def signalled_at_5(*args, **kwargs):
        sampler, batches = build(*args, **kwargs)

        def stream():
            for iteration, batch in enumerate(batches, start=kwargs["start_iter"] + 1):
                if iteration == 5:
                    os.kill(os.getpid(), signal.SIGUSR2)
                yield batch
        return sampler, stream()

    run_dir = tmp_path / "run"
    monkeypatch.setattr(runner, "build_train_batches", signalled_at_5)
    previous = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with pytest.raises(_Requeued):
            run_experiment(_config(num_workers=0), run_dir, progress=False)
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # restored before the call
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert handled == [[3, 5]]
    events = [r for r in read_log(run_dir / "log.jsonl") if "event" in r]
    assert events == [{"iter": 5, "event": "checkpoint on SIGUSR2 signal"}]

    monkeypatch.setattr(runner, "build_train_batches", build)
    result = run_experiment(_config(num_workers=0), run_dir, progress=False)
    assert result["provenance"]["resumed_from"] == 5
    _assert_same_weights(_final_model(run_dir), reference)
