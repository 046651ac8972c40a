"""Launching runs as submitit jobs: SLURM job arrays, local background processes, in-process debug.

The only package that imports submitit. Layering: builds on ``job`` (the idempotent run unit and
the run-directory format); ``store``, ``report`` and ``cli`` sit above it.

    settings        ClusterSettings: CLI flags > ATSS_BENCH_* > [cluster] in the config file
    executors       settings -> submitit AutoExecutor parameters, the sbatch header
    submitit_job    SubmititRun: the job callable (idempotent __call__, checkpoint() requeues)
    submit          plan_submission / submit_plan: one job array per recipe, store records
    resources       COCO-scale SLURM runs: the paper's 8 GPUs, a time limit from the schedule
    slurm_query     query_slurm_states: squeue and sacct, each standing in when the other fails
    states          refresh_job_states: the store joined with the scheduler; ended jobs recorded
"""
from atss_bench.launch.settings import ClusterSettings, resolve_settings
from atss_bench.launch.states import JobState, refresh_job_states
from atss_bench.launch.submit import (
    PlannedTask,
    Submission,
    SubmissionPlan,
    SubmittedRun,
    plan_submission,
    run_debug_jobs,
    submit_experiments,
    submit_plan,
    watch_runs,
)
from atss_bench.launch.submitit_job import SubmititChain, SubmititRun, distributed_env

__all__ = [
    "ClusterSettings",
    "JobState",
    "PlannedTask",
    "Submission",
    "SubmissionPlan",
    "SubmititChain",
    "SubmititRun",
    "SubmittedRun",
    "distributed_env",
    "plan_submission",
    "refresh_job_states",
    "resolve_settings",
    "run_debug_jobs",
    "submit_experiments",
    "submit_plan",
    "watch_runs",
]
