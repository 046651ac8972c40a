"""Smoke tests: submitit runs real jobs on the SLURM cluster the way atss-bench will use it.

Needs a running cluster (tests/slurm/cluster.sh start); about 25 s, most of it the cancel test
(submitit waits 15 s for a result file that a cancelled job never writes).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

# Ship this module's functions by value: a job must not depend on how pytest named the module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOB_TIMEOUT_S = 120  # a healthy one-node cluster finishes any job here in seconds


def add(a: int, b: int) -> int:
    return a + b


def reject_negative(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative input {x} rejected")
    return 10 * x


def sleep_after_marker(marker: Path, seconds: float) -> None:
    marker.touch()
    time.sleep(seconds)


def describe_job_python() -> tuple[str, str, str]:
    import atss_bench.errors

    errors_file = str(Path(atss_bench.errors.__file__).resolve())
    return sys.executable, errors_file, submitit.JobEnvironment().job_id


def wait_done(job: submitit.Job, timeout_s: float = JOB_TIMEOUT_S, force: bool = False) -> None:
    """Fail instead of hanging when a job never finishes (e.g. accounting is down).

    force: ask sacct at every poll (for jobs that end without a result file, e.g. cancelled).
    """
    deadline = time.monotonic() + timeout_s
    while not job.done(force_check=force):
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {timeout_s}s (state {job.state})")
        time.sleep(0.5)


def test_single_job_returns_its_result(slurm_executor) -> None:
    job = slurm_executor().submit(add, 2, 3)
    wait_done(job)
    assert job.result() == 5


def test_job_runs_this_python_and_imports_the_project(slurm_executor) -> None:
    job = slurm_executor().submit(describe_job_python)
    wait_done(job)
    python, errors_file, job_id = job.result()
    assert python == sys.executable
    assert errors_file == str(Path(__file__).resolve().parents[2] / "atss_bench" / "errors.py")
    assert job_id == job.job_id


def test_map_array_reports_the_failing_task(slurm_executor) -> None:
    jobs = slurm_executor().map_array(reject_negative, [1, -7, 3])
    results, failures = [], []
    for job in jobs:
        wait_done(job)
        try:
            results.append(job.result())
        except submitit.core.utils.FailedJobError as err:
            failures.append(str(err))
    assert results == [10, 30]
    assert len(failures) == 1
    assert "ValueError" in failures[0] and "negative input -7 rejected" in failures[0]


def test_cancelled_job_ends_cancelled(slurm_executor, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    job = slurm_executor().submit(sleep_after_marker, marker, 600)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not marker.exists():
        assert time.monotonic() < deadline, f"job {job.job_id} never started ({job.state})"
        time.sleep(0.2)
    job.cancel()
    wait_done(job, force=True)
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()  # ~15 s: submitit waits for a result file a cancelled job never writes
    assert job.state.split()[0] == "CANCELLED"  # sacct says e.g. "CANCELLED by 0"
