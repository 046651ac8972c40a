"""Submit a recipe's runs: one submitit job array, one task per run that is not done yet.

    plan = plan_submission(results_dir, experiments, settings)   # reads only
    submission = submit_plan(plan)                               # sbatch + store records

A run is left out when it is done, busy (another process holds its lock) or already queued or
running in a job the scheduler still knows, or recorded pending/running in a job the scheduler
cannot be asked about (squeue and sacct both failed: "queued?", never a second submission);
identical run ids are submitted once. Every submitted
run is recorded as ``pending`` with its job id, cluster, submitit folder and log paths, so
``atss-bench status`` (through ``launch.states.refresh_job_states``) can follow it.
"""
from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.core.utils import FailedJobError, FailedSubmissionError

from atss_bench.errors import LaunchError
from atss_bench.job import PlannedRun, mark_pending, plan_runs, refuse_conflicts
from atss_bench.job import rundir as rd
from atss_bench.launch.executors import make_executor, render_sbatch_script
from atss_bench.launch.settings import ClusterSettings
from atss_bench.launch.states import TERMINAL, UNFINISHED, JobState, refresh_job_states
from atss_bench.launch.submitit_job import SubmititChain, SubmititRun
from atss_bench.recipes import Experiment


@dataclass
class PlannedTask:
    experiment: Experiment
    action: str  # submit | skip (done) | busy | queued | queued? (scheduler unreachable)
    detail: str = ""

    @property
    def will_submit(self) -> bool:
        return self.action == "submit"


@dataclass
class SubmissionPlan:
    results_dir: Path
    settings: ClusterSettings
    name: str
    tasks: list[PlannedTask]
    train_fn: str | None = None
    data_root: str | None = None

    @property
    def to_submit(self) -> list[Experiment]:
        return [t.experiment for t in self.tasks if t.will_submit]

    def sbatch_script(self) -> str:
        """The whole script sbatch would get (dry runs print it), as submitit writes it."""
        return render_sbatch_script(self.results_dir, self.settings, self.name,
                                    max(1, len(self.to_submit)))


@dataclass
class SubmittedRun:
    experiment: Experiment
    job_id: str
    stdout: str | None
    stderr: str | None


@dataclass
class Submission:
    plan: SubmissionPlan
    runs: list[SubmittedRun] = field(default_factory=list)
    jobs: list[Any] = field(default_factory=list)  # submitit Job handles, one per job
    seconds: float = 0.0

    @property
    def job_ids(self) -> list[str]:
        return list(dict.fromkeys(r.job_id for r in self.runs))

    @property
    def array_id(self) -> str | None:
        ids = {job_id.split("_")[0] for job_id in self.job_ids}
        return ids.pop() if len(ids) == 1 else None


def job_name(experiments: Sequence[Experiment]) -> str:
    if not experiments:
        return "atss-bench"
    first = experiments[0]
    return f"atss-table{first.table}-{first.profile}"


def _task(item: PlannedRun, queued: dict[str, JobState]) -> PlannedTask:
    exp = item.experiment
    if item.action == "skip":
        return PlannedTask(exp, "skip", item.detail)
    if item.action in ("busy", "conflict"):  # conflict: a stored run of another dataset
        return PlannedTask(exp, item.action, item.detail)
    job = queued.get(exp.run_id)
    if job is not None and job.unreachable:  # never a second submission of a queued run
        return PlannedTask(exp, "queued?", f"job {job.job_id}: scheduler unreachable (squeue and "
                                           "sacct failed); not resubmitted")
    if job is not None:
        return PlannedTask(exp, "queued", f"already in job {job.job_id} ({job.scheduler_state})")
    return PlannedTask(exp, "submit", item.detail or "new")


def plan_submission(
    results_dir: str | Path,
    experiments: Sequence[Experiment],
    settings: ClusterSettings,
    *,
    train_fn: str | None = None,
    data_root: str | None = None,
    record: bool = True,
) -> SubmissionPlan:
    """What a submission would do with each distinct run. ``record=False`` (dry runs) writes
    nothing; otherwise ended jobs of earlier submissions are first recorded (see states)."""
    results_dir = Path(results_dir).absolute()
    plan = plan_runs(results_dir, experiments, data_root=data_root)
    run_ids = [item.experiment.run_id for item in plan]
    jobs = refresh_job_states(results_dir, run_ids, record=record)
    queued = {j.run_id: j for j in jobs
              if j.scheduler_active or (j.unreachable and j.state in UNFINISHED)}
    if record:  # states may have changed: plan again on the refreshed store
        plan = plan_runs(results_dir, experiments, data_root=data_root)
    if record:  # a stored run of another dataset: refuse before submitting anything
        refuse_conflicts(plan)
    tasks = [_task(item, queued) for item in plan]
    return SubmissionPlan(results_dir, settings, job_name([t.experiment for t in tasks]), tasks,
                          train_fn=train_fn, data_root=data_root)


def _callables(plan: SubmissionPlan) -> list[tuple[Any, list[Experiment]]]:
    runs = [SubmititRun(str(plan.results_dir), exp, plan.train_fn, plan.data_root)
            for exp in plan.to_submit]
    if plan.settings.cluster != "local":
        return [(run, [run.experiment]) for run in runs]
    # local: N background processes, each training its share of the runs one after another
    n = min(len(runs), plan.settings.array_parallelism or 1)
    chains = [runs[i::n] for i in range(n)]
    return [(SubmititChain(tuple(chain)), [r.experiment for r in chain]) for chain in chains]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")


def submit_plan(plan: SubmissionPlan) -> Submission:
    """Submit the plan's runs as one job array (local: one process per chain) and record them."""
    start = time.monotonic()
    submission = Submission(plan)
    todo = _callables(plan)
    if not todo:
        return submission
    executor = make_executor(plan.results_dir, plan.settings, plan.name)
    try:
        jobs = executor.submit_array([fn for fn, _ in todo])
    except (FailedJobError, FailedSubmissionError, subprocess.SubprocessError, OSError) as exc:
        raise LaunchError(f"{plan.settings.cluster} submission failed: {_first_line(exc)}",
                          hint="check the parameters with --dry-run") from None
    for job, (_, experiments) in zip(jobs, todo):
        stdout, stderr = str(job.paths.stdout), str(job.paths.stderr)
        for exp in experiments:
            fields: dict[str, Any] = {
                "cluster": plan.settings.cluster, "submitit_job_id": str(job.job_id),
                "submitit_folder": str(job.paths.folder), "stdout": stdout, "stderr": stderr,
                "slurm_job_id": str(job.job_id) if plan.settings.cluster == "slurm" else None,
            }
            mark_pending(plan.results_dir, exp, **fields)
            submission.runs.append(SubmittedRun(exp, str(job.job_id), stdout, stderr))
        submission.jobs.append(job)
    submission.seconds = time.monotonic() - start
    return submission


def submit_experiments(
    results_dir: str | Path,
    experiments: Sequence[Experiment],
    settings: ClusterSettings,
    *,
    train_fn: str | None = None,
    data_root: str | None = None,
) -> Submission:
    """Plan and submit in one call (the library entry point behind ``atss-bench submit``)."""
    return submit_plan(plan_submission(results_dir, experiments, settings, train_fn=train_fn,
                                       data_root=data_root))


def run_debug_jobs(submission: Submission) -> list[tuple[SubmittedRun, BaseException | None]]:
    """--cluster debug: run every job in this process now (breakpoints work); failures are
    collected, never stop the next run."""
    outcomes: list[tuple[SubmittedRun, BaseException | None]] = []
    for job, run in zip(submission.jobs, submission.runs):
        try:
            job.result()
            outcomes.append((run, None))
        except Exception as exc:  # noqa: BLE001  (recorded in the run's status.json)
            outcomes.append((run, exc))
    return outcomes


def _unrecorded_finished(results_dir: str | Path, run_ids: Sequence[str],
                         states: Sequence[JobState]) -> bool:
    """Runs without a job record (taken by another process before they were marked): over?"""
    seen = {s.run_id for s in states}
    for run_id in set(run_ids) - seen:
        status = rd.read_json(rd.run_dir_for(results_dir, run_id) / rd.STATUS) or {}
        if status.get("state") not in TERMINAL:
            return False
    return True


def watch_runs(results_dir: str | Path, run_ids: Sequence[str], *, interval_s: float = 5.0,
               timeout_s: float | None = None, jobs: Sequence[Any] = ()
               ) -> Iterator[list[JobState]]:
    """Yield the runs' job states every ``interval_s`` until every run is finished (or the
    time-out passes); the last snapshot yielded is the final one. ``jobs``: submitit handles of
    local jobs, polled so that their finished processes are reaped."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        for job in jobs:
            with suppress(Exception):
                job.done()
        states = refresh_job_states(results_dir, run_ids)
        yield states
        if all(s.finished for s in states) and _unrecorded_finished(results_dir, run_ids, states):
            return
        if deadline is not None and time.monotonic() > deadline:
            return
        time.sleep(interval_s)
