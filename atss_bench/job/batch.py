"""Many experiments: plan (what runs, what is skipped), then run them here, one after another
or ``jobs`` at a time in worker processes.

Identical experiments (the same run_id, e.g. Table 2's iou_box and Table 3's retinanet, or a row
listed twice) run once. A failing run is recorded and the next one still runs.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from atss_bench.job import rundir as rd
from atss_bench.job.runner import RunBusyError, TrainFn, failure_reason, run_experiment_job
from atss_bench.recipes import Experiment

Action = Literal["run", "resume", "rerun", "skip", "busy"]


@dataclass
class PlannedRun:
    experiment: Experiment
    action: Action
    detail: str = ""  # why: "done, AP 37.1", "failed: ...", "running elsewhere", ...
    ap: float | None = None  # the stored AP of a finished run

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
              force: bool = False) -> list[PlannedRun]:
    """What ``run`` would do with each distinct experiment (reads the store, writes nothing)."""
    plan = []
    for exp in dedupe(experiments):
        run_dir = rd.run_dir_for(results_dir, exp.run_id)
        stored = rd.read_done_metrics(run_dir)
        status = rd.read_json(run_dir / rd.STATUS) or {}
        if rd.lock_is_held(run_dir):
            plan.append(PlannedRun(exp, "busy", "running in another process"))
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


def _train_one(results_dir: str, item: PlannedRun, train_fn: TrainFn | str | None,
               data_root: str | None) -> RunOutcome:
    start = time.monotonic()
    try:
        record = run_experiment_job(results_dir, item.experiment, train_fn=train_fn,
                                    force=item.action == "rerun", data_root=data_root,
                                    progress=False)
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


def _init_worker(threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # read by torch and the engine


def _run_parallel(results_dir: str, todo: list[PlannedRun], train_fn: TrainFn | str | None,
                  data_root: str | None, on_start: Callable[[PlannedRun], Any] | None,
                  on_finish: Callable[[RunOutcome], Any] | None, jobs: int) -> list[RunOutcome]:
    """At most ``jobs`` runs in flight; the next starts when one ends (plan order kept)."""
    pending = list(todo)
    outcomes: dict[str, RunOutcome] = {}
    context = multiprocessing.get_context("spawn")  # no forked torch / thread state
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                             initargs=(cpu_threads_per_job(jobs),)) as pool:
        running: dict[Future[RunOutcome], PlannedRun] = {}
        try:
            while pending or running:
                while pending and len(running) < jobs:
                    item = pending.pop(0)
                    if on_start:
                        on_start(item)
                    future: Future[RunOutcome] = Future()
                    try:
                        future = pool.submit(_train_one, results_dir, item, train_fn, data_root)
                    except BrokenProcessPool as exc:  # an earlier worker died
                        future.set_exception(exc)
                    running[future] = item
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    item = running.pop(future)
                    outcome = _collect(future, item)
                    outcomes[item.experiment.run_id] = outcome
                    if on_finish:
                        on_finish(outcome)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # running ones record their state
            raise
    ids = [item.experiment.run_id for item in todo]
    return [outcomes[run_id] for run_id in ids if run_id in outcomes]


def _collect(future: Future[RunOutcome], item: PlannedRun) -> RunOutcome:
    """The worker's outcome; a worker that died (killed, out of memory) fails its run."""
    try:
        return future.result()
    except BrokenProcessPool:
        return RunOutcome(item.experiment, "failed",
                          reason="its worker process died (killed or out of memory)")
    except Exception as exc:  # noqa: BLE001  (e.g. a train_fn that cannot be pickled)
        return RunOutcome(item.experiment, "failed", reason=failure_reason(exc))
