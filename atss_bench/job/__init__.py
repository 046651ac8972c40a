"""Jobs: one experiment trained into its own run directory, idempotently.

Layering: this package sits below ``launch`` and ``store`` (both build on its run-directory
format in ``rundir``); it never imports them. Importable without submitit or torch.
"""
from atss_bench.job.batch import (
    DeviceMismatchError,
    PlannedRun,
    RunOutcome,
    cpu_threads_per_job,
    dedupe,
    plan_runs,
    refuse_conflicts,
    run_planned,
)
from atss_bench.job.dataset import DatasetMismatchError
from atss_bench.job.runner import (
    RunBusyError,
    RunJob,
    TrainFn,
    default_train_fn,
    failure_reason,
    mark_pending,
    resolve_train_fn,
    run_experiment_job,
)

__all__ = [
    "DatasetMismatchError", "DeviceMismatchError", "PlannedRun", "RunBusyError", "RunJob", "RunOutcome", "TrainFn",
    "cpu_threads_per_job", "dedupe", "default_train_fn", "failure_reason", "mark_pending",
    "plan_runs", "refuse_conflicts", "resolve_train_fn", "run_experiment_job", "run_planned",
]
