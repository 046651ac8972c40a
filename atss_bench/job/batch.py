"""Many experiments, one after another in this process: plan (what runs, what is skipped), run.

Identical experiments (the same run_id, e.g. Table 2's iou_box and Table 3's retinanet, or a row
listed twice) run once. A failing run is recorded and the next one still runs.
"""
from __future__ import annotations

import time
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
) -> list[RunOutcome]:
    """Train every planned run that needs it, sequentially; failures never stop the others."""
    outcomes = []
    for item in plan:
        if not item.will_train:
            continue
        if on_start:
            on_start(item)
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
        outcomes.append(outcome)
        if on_finish:
            on_finish(outcome)
    return outcomes
