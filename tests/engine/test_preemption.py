"""Deferred preemption signals: recorded during training, handed on after a checkpoint."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from atss_bench.engine.distributed import DistInfo
from atss_bench.engine.preemption import DeferredSignals
from tests.engine.conftest import REPO_ROOT, single_thread_env
from tests.engine.test_train import _loop, _Toy


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_signals_wait_for_the_iteration_and_go_to_the_previous_handler(restore_handlers) -> None:
    calls: list[tuple[int, list[int]]] = []
    saved: list[int] = []
    signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append((signum, list(saved))))
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append((signum, list(saved))))
    model = _Toy(bad_call=-1)
    forward = model.forward

    def signalled(images, targets):
        if model.calls == 3:  # during iteration 4: SIGTERM then USR2, as a SLURM preemption
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGUSR2)
            assert calls == []  # recorded, not handled, mid-iteration
        if model.calls == 7:  # iteration 8: still deferred after the first delivery
            os.kill(os.getpid(), signal.SIGUSR2)
            assert len(calls) == 2
        return forward(images, targets)

    model.forward = signalled
    with DeferredSignals(DistInfo()) as signals:
        # the previous handlers return (as submitit's SIGTERM bypass does): training goes on
        result = _loop(model, 9, checkpoint_period=3, save_checkpoint=saved.append,
                       signals=signals)
    assert calls == [(signal.SIGTERM, [3, 4]), (signal.SIGUSR2, [3, 4]),
                     (signal.SIGUSR2, [3, 4, 6, 8])]
    assert saved == [3, 4, 6, 8, 9] and result.iterations == 9


def test_a_signal_on_a_checkpoint_iteration_saves_once(restore_handlers) -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    saved: list[int] = []
    model = _Toy(bad_call=-1)
    forward = model.forward

    def signalled(images, targets):
        if model.calls == 2:  # iteration 3, a periodic checkpoint
            os.kill(os.getpid(), signal.SIGUSR2)
        return forward(images, targets)

    model.forward = signalled
    with DeferredSignals(DistInfo()) as signals:
        _loop(model, 5, checkpoint_period=3, save_checkpoint=saved.append, signals=signals)
    assert saved == [3, 5]
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN


def test_handlers_are_restored_and_nothing_pending_means_no_stop(restore_handlers) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with DeferredSignals(DistInfo()) as signals:
        assert signal.getsignal(signal.SIGTERM) == signals._record
        assert not signals.requested()
    assert signal.getsignal(signal.SIGTERM) == before


KILLED_LOCALLY = """
import sys, time
from pathlib import Path
from atss_bench.engine.distributed import DistInfo
from atss_bench.engine.preemption import DeferredSignals
from tests.engine.test_train import _loop, _Toy

out = Path(sys.argv[1])
model = _Toy(bad_call=-1)
forward = model.forward
def slow(images, targets):
    if model.calls == 2:
        print("training", flush=True)
    time.sleep(0.01)
    return forward(images, targets)
model.forward = slow
with DeferredSignals(DistInfo()) as signals:
    _loop(model, 100000, checkpoint_period=100000, signals=signals,
          save_checkpoint=lambda it: out.write_text(str(it)))
"""


def test_a_local_kill_checkpoints_then_terminates(tmp_path) -> None:
    """No handler before (a local run): SIGTERM still ends the process as SIGTERM, a checkpoint
    of the iteration it came in later."""
    out = tmp_path / "saved"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_LOCALLY, str(out)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, text=True, env=single_thread_env())
    assert proc.stdout.readline() == "training\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    assert int(out.read_text()) >= 3
