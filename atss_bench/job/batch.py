"""Many experiments: plan (what runs, what is skipped), then run them here, one after another
or ``jobs`` at a time in worker processes.

Identical experiments (the same run_id, e.g. Table 2's iou_box and Table 3's retinanet, or a row
listed twice) run once. A failing run is recorded and the next one still runs; under ``jobs``
> 1 a worker process that dies (SIGKILL, out of memory) fails its own run only.

Progress: on a terminal the caller draws it from the runs' logs (the CLI's bars) and the engine
stays quiet; off a terminal (a pipe, a CI log, ``nohup``) each run's engine prints its plain
progress lines to the shared stdout (``engine.monitor``), from whichever process trains it.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import connection
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

from atss_bench.devices import recorded_device
from atss_bench.errors import StoreError
from atss_bench.job import rundir as rd
from atss_bench.job.dataset import (WAY_OUT, DatasetMismatchError, IdentityMemo, has_checkpoints,
                                    mismatch, recorded_dataset)
from atss_bench.job.runner import RunBusyError, TrainFn, failure_reason, run_experiment_job
from atss_bench.recipes import Experiment

# conflict: the stored run was made on another dataset (job.dataset) or, when the caller knows
# the device it trains on, on another device type; run/submit/check refuse it
Action = Literal["run", "resume", "rerun", "skip", "busy", "conflict"]
DEVICE_WAY_OUT = ("--device with the record's device reuses it, --force retrains it here, "
                  "or use --results DIR for a separate store")
STOP_GRACE_S = 5.0  # Ctrl-C: time for workers to record their runs after the terminal's SIGINT
TERM_GRACE_S = 60.0  # then SIGTERM: time to checkpoint the iteration and record the run
EXIT_WAIT_S = 60.0  # a worker that sent its outcome has this long to exit


@dataclass
class PlannedRun:
    experiment: Experiment
    action: Action
    detail: str = ""  # why: "done, AP 37.1", "failed: ...", "running elsewhere", ...
    ap: float | None = None  # the stored AP of a finished run
    conflict: Literal["dataset", "device"] | None = None  # what a "conflict" is about

    @property
    def will_train(self) -> bool:
        return self.action in ("run", "resume", "rerun")


@dataclass
class RunOutcome:
    experiment: Experiment
    state: str  # done | failed | busy | skipped
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0


def dedupe(experiments: Iterable[Experiment]) -> list[Experiment]:
    """First experiment of each run_id, order kept."""
    seen: set[str] = set()
    out = []
    for exp in experiments:
        if exp.run_id not in seen:
            seen.add(exp.run_id)
            out.append(exp)
    return out


def plan_runs(results_dir: str | Path, experiments: Iterable[Experiment],
              force: bool = False, data_root: str | None = None,
              device: str | None = None) -> list[PlannedRun]:
    """What ``run`` would do with each distinct experiment (reads the store, writes nothing).

    A stored run (done, or with checkpoints) of another dataset than the one ``data_root`` (or
    the config, or $ATSS_BENCH_DATA) gives is a ``conflict`` unless ``force``: its detail is
    the refusal's one line. A dataset not reachable from here is not checked (the job checks).
    With ``device`` (``cpu``/``cuda``: what the runs would train on here), a finished run made
    on the other type is a ``conflict`` too: a CUDA run (AMP) of a run id is another sample than
    its CPU run, so one is never reused as the other (a checkpoint is refused by the engine).
    """
    plan = []
    identities = IdentityMemo(data_root)
    for exp in dedupe(experiments):
        run_dir = rd.run_dir_for(results_dir, exp.run_id)
        stored = rd.read_done_metrics(run_dir)
        status = rd.read_json(run_dir / rd.STATUS) or {}
        if rd.lock_is_held(run_dir):
            plan.append(PlannedRun(exp, "busy", "running in another process"))
        elif not force and (conflict := _dataset_conflict(run_dir, exp, stored, identities)):
            plan.append(PlannedRun(exp, "conflict", conflict.message, conflict="dataset"))
        elif not force and (other := _device_conflict(exp, stored, device)):
            plan.append(PlannedRun(exp, "conflict", other, conflict="device"))
        elif stored is not None:
            ap = stored["metrics"]["AP"]
            plan.append(PlannedRun(exp, "rerun" if force else "skip", f"done, AP {ap:.1f}", ap))
        elif status.get("state") in (rd.FAILED, rd.RUNNING, rd.CANCELLED, rd.TIMED_OUT):
            why = status.get("reason") or "interrupted"
            plan.append(PlannedRun(exp, "rerun" if force else "resume",
                                   f"{status['state']}: {why}"))
        else:
            plan.append(PlannedRun(exp, "run"))
    return plan


def _dataset_conflict(run_dir: Path, exp: Experiment, stored: dict[str, Any] | None,
                      identities: IdentityMemo) -> DatasetMismatchError | None:
    if stored is None and not has_checkpoints(run_dir):
        return None  # nothing stored to reuse or resume
    current = identities.get(exp.config.data)
    if current is None:
        return None
    return mismatch(exp, recorded_dataset(run_dir, stored), current)


def _device_conflict(exp: Experiment, stored: dict[str, Any] | None,
                     device: str | None) -> str | None:
    recorded = recorded_device((stored or {}).get("provenance")) if device else None
    if recorded is None or recorded == device:
        return None
    return (f"run {exp.run_id} ({exp.row_id} seed {exp.seed}) was trained on {recorded}; "
            f"here it would train on {device}, another sample of the same run id")


class DeviceMismatchError(StoreError):
    """A finished run was trained on another device type than the one used now."""


def refuse_conflicts(plan: Iterable[PlannedRun]) -> None:
    """Raise the first ``conflict``'s error, DatasetMismatchError or DeviceMismatchError
    (before anything is trained)."""
    conflicts = [item for item in plan if item.action == "conflict"]
    if not conflicts:
        return
    first = conflicts[0]
    more = f" (and {len(conflicts) - 1} more runs)" if len(conflicts) > 1 else ""
    if first.conflict == "device":
        raise DeviceMismatchError(first.detail + more, hint=DEVICE_WAY_OUT)
    raise DatasetMismatchError(first.detail + more, hint=WAY_OUT)


def run_planned(
    results_dir: str | Path,
    plan: Iterable[PlannedRun],
    *,
    train_fn: TrainFn | str | None = None,
    data_root: str | None = None,
    on_start: Callable[[PlannedRun], Any] | None = None,
    on_finish: Callable[[RunOutcome], Any] | None = None,
    jobs: int = 1,
) -> list[RunOutcome]:
    """Train every planned run that needs it; failures never stop the others.

    ``jobs`` > 1 trains that many runs at once, each in its own spawned process with an equal
    share of this machine's cores (``OMP_NUM_THREADS``, unless set); ``train_fn`` must then be
    picklable (a module-level function or a ``"module:function"`` path). Callbacks run here, in
    the calling process, in the order runs start and finish.
    """
    todo = [item for item in plan if item.will_train]
    if jobs <= 1 or len(todo) <= 1:
        outcomes = []
        for item in todo:
            if on_start:
                on_start(item)
            outcomes.append(_train_one(str(results_dir), item, train_fn, data_root))
            if on_finish:
                on_finish(outcomes[-1])
        return outcomes
    return _run_parallel(str(results_dir), todo, train_fn, data_root, on_start, on_finish, jobs)


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # closed, or replaced by an object without a file
        return False


def _train_one(results_dir: str, item: PlannedRun, train_fn: TrainFn | str | None,
               data_root: str | None) -> RunOutcome:
    start = time.monotonic()
    try:
        record = run_experiment_job(results_dir, item.experiment, train_fn=train_fn,
                                    force=item.action == "rerun", data_root=data_root,
                                    progress=not stdout_is_terminal())
        outcome = RunOutcome(item.experiment, "done", metrics=dict(record["metrics"]))
    except RunBusyError as exc:
        outcome = RunOutcome(item.experiment, "busy", reason=exc.message)
    except Exception as exc:  # noqa: BLE001  (recorded in the run's status; the rest go on)
        outcome = RunOutcome(item.experiment, "failed", reason=failure_reason(exc))
    outcome.seconds = time.monotonic() - start
    return outcome


def cpu_threads_per_job(jobs: int) -> int:
    """An equal share of the cores this process may use, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // jobs)


class Terminated(KeyboardInterrupt):
    """Raised in a worker by SIGTERM (the batch is being stopped): the run records it as failed."""


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise Terminated(f"stopped by {signal.Signals(signum).name} (the batch was interrupted)")


def _worker_main(conn: Connection, results_dir: str, item: PlannedRun,
                 train_fn: TrainFn | str | None, data_root: str | None) -> None:
    """One run in its own spawned process; its outcome goes back through ``conn``."""
    signal.signal(signal.SIGTERM, _raise_terminated)  # the engine defers it to an iteration end
    try:
        outcome = _train_one(results_dir, item, train_fn, data_root)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run recorded it; the parent is stopping
        sys.exit(130)
    conn.send(outcome)
    conn.close()


@contextmanager
def _omp_threads(threads: int) -> Iterator[None]:
    """``OMP_NUM_THREADS`` in the environment of the processes started inside (unless the user
    set it): OpenMP reads it once, when torch loads, and a spawned worker loads torch while it
    unpickles its arguments (a train function from a module importing torch, such as the
    engine's), before any of its own code runs. Two workers with every core each on this
    machine's 2 cores ran at 0.53 s per mini iteration instead of 0.22 (engine.runner)."""
    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]


@dataclass
class _Worker:
    item: PlannedRun
    process: BaseProcess
    conn: Connection
    started: float


def _start_worker(context: BaseContext, threads: int, results_dir: str, item: PlannedRun,
                  train_fn: TrainFn | str | None, data_root: str | None) -> _Worker | RunOutcome:
    """A spawned process training ``item``, or a failed outcome when it cannot start (e.g. a
    train_fn that cannot be pickled)."""
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_worker_main, name=f"atss-run-{item.experiment.run_id}",
                              args=(writer, results_dir, item, train_fn, data_root))
    try:
        with _omp_threads(threads):
            process.start()
    except Exception as exc:  # noqa: BLE001  (pickling, fork limits: this run fails, not all)
        reader.close()
        return RunOutcome(item.experiment, "failed", reason=failure_reason(exc))
    finally:
        writer.close()  # the child's copy is the only one left: its death reads as EOF here
    return _Worker(item, process, reader, time.monotonic())


def _run_parallel(results_dir: str, todo: list[PlannedRun], train_fn: TrainFn | str | None,
                  data_root: str | None, on_start: Callable[[PlannedRun], Any] | None,
                  on_finish: Callable[[RunOutcome], Any] | None, jobs: int) -> list[RunOutcome]:
    """At most ``jobs`` runs in flight, one spawned process each (no forked torch or thread
    state); the next starts when one ends. A process that dies (killed, out of memory) fails
    its own run only. Ctrl-C stops the workers (``_stop_workers``) and re-raises."""
    context = multiprocessing.get_context("spawn")
    threads = cpu_threads_per_job(jobs)
    pending, running = list(todo), []
    outcomes: dict[str, RunOutcome] = {}

    def finish(outcome: RunOutcome) -> None:
        outcomes[outcome.experiment.run_id] = outcome
        if on_finish:
            on_finish(outcome)

    try:
        while pending or running:
            while pending and len(running) < jobs:
                item = pending.pop(0)
                if on_start:
                    on_start(item)
                worker = _start_worker(context, threads, results_dir, item, train_fn, data_root)
                if isinstance(worker, RunOutcome):
                    finish(worker)
                else:
                    running.append(worker)
            if not running:
                continue
            ready = set(connection.wait([w.conn for w in running]
                                        + [w.process.sentinel for w in running]))
            for worker in [w for w in running if w.conn in ready or w.process.sentinel in ready]:
                running.remove(worker)
                finish(_collect(worker, results_dir))
    except BaseException:
        _stop_workers(running)
        raise
    ids = [item.experiment.run_id for item in todo]
    return [outcomes[run_id] for run_id in ids if run_id in outcomes]


def _collect(worker: _Worker, results_dir: str) -> RunOutcome:
    """The worker's outcome; a worker that died before sending one fails its run."""
    outcome = None
    try:
        if worker.conn.poll():
            outcome = worker.conn.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        outcome = None  # it died before (or while) sending
    finally:
        worker.conn.close()
    worker.process.join(EXIT_WAIT_S)
    if worker.process.is_alive():  # sent its outcome but hangs on the way out
        worker.process.kill()
        worker.process.join()
    if isinstance(outcome, RunOutcome):
        return outcome
    code = worker.process.exitcode
    reason = (f"its worker process died (signal {-code})" if code is not None and code < 0
              else f"its worker process exited with code {code} before reporting a result")
    _record_lost_run(results_dir, worker, reason)
    return RunOutcome(worker.item.experiment, "failed", reason=reason,
                      seconds=time.monotonic() - worker.started)


def _record_lost_run(results_dir: str, worker: _Worker, reason: str) -> None:
    """The dead worker left its run 'running': record it failed (under the run's lock, and only
    if the status is still that worker's)."""
    run_dir = rd.run_dir_for(results_dir, worker.item.experiment.run_id)
    lock = rd.RunLock(run_dir)
    try:
        if not lock.acquire(wait=False):
            return  # another process took the run meanwhile: its status is its own
        try:
            status = rd.read_json(run_dir / rd.STATUS) or {}
            if status.get("state") == rd.RUNNING and status.get("pid") == worker.process.pid:
                rd.write_status(run_dir, rd.FAILED, reason=reason, finished=rd.utc_now())
        finally:
            lock.release()
    except (OSError, StoreError):  # e.g. a store without flock
        pass  # bookkeeping only: the outcome already says it failed


def _join_all(workers: list[_Worker], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))


def _stop_workers(workers: list[_Worker]) -> None:
    """Ctrl-C (or any error here): the workers got the terminal's SIGINT too and record their
    runs as failed; those still alive after STOP_GRACE_S get SIGTERM (the engine checkpoints its
    iteration, then the run records it), after TERM_GRACE_S SIGKILL. A second Ctrl-C kills."""
    try:
        _join_all(workers, STOP_GRACE_S)
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
        _join_all(workers, TERM_GRACE_S)
    finally:
        for worker in workers:
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join()
            worker.conn.close()
