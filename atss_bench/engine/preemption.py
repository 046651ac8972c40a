"""Checkpoint on preemption: SIGUSR2 and SIGTERM wait for the end of the training iteration.

SLURM warns a job with a signal before it preempts it or its time runs out (atss-bench submits
with USR2 ``signal_delay_s`` ahead; a preemption also sends SIGTERM). submitit's handlers for
them requeue the job and exit at once, wherever the main thread is, so without this the
requeued attempt lost every iteration since the last periodic checkpoint.

While training, :class:`DeferredSignals` records these signals instead. At the end of each
iteration the loop asks :meth:`DeferredSignals.requested` (one all-reduce when distributed, so
every process stops at the same iteration), writes a checkpoint of that iteration and then
:meth:`DeferredSignals.deliver` hands each signal to the handler that was there before: submitit
requeues and exits; with no handler (a plain ``kill`` of a local run) the process ends as the
signal's default action says, a checkpoint richer. A signal that arrives outside training
(loading, evaluation) goes straight to the previous handler, as before.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from atss_bench.engine.distributed import DistInfo

DEFERRED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGUSR2, signal.SIGTERM)
PEER_SIGNAL_WAIT_S = 10.0  # a process told by another that a signal came waits this for its own


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class DeferredSignals:
    """Context manager for the training loop (see module doc). In a thread other than the main
    one, where Python cannot install handlers, it records nothing and never stops training."""

    def __init__(self, dist_info: DistInfo) -> None:
        self.dist_info = dist_info
        self.pending: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> DeferredSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in DEFERRED_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        if signum not in self.pending:
            self.pending.append(signum)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def requested(self) -> bool:
        """Whether any process got a deferred signal (collective: every process calls it)."""
        flag = bool(self.pending)
        if self.dist_info.distributed:
            tensor = torch.tensor([int(flag)], device=self.dist_info.device)
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            flag = bool(tensor.item())
        return flag

    def deliver(self) -> None:
        """Give the recorded signals to the handlers that were there before, in arrival order.
        Returns only if none of them ends the process (submitit's SIGTERM bypass, an ignored
        signal); training then goes on, still deferring signals.

        A process that got no signal itself (another one did: SLURM signals every task, not at
        the same instant) first waits up to :data:`PEER_SIGNAL_WAIT_S` for its own."""
        deadline = time.monotonic() + PEER_SIGNAL_WAIT_S
        while not self.pending and self._previous and time.monotonic() < deadline:
            time.sleep(0.05)
        pending, self.pending = self.pending, []
        for signum in pending:
            handler = self._previous.get(signum, signal.SIG_DFL)
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:  # e.g. a plain `kill` of a local run: terminate
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)  # USR2's and TERM's default action ends the process
