"""refresh_job_states: the store joined with (faked) scheduler states, ended jobs recorded."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from atss_bench.job import mark_pending, run_experiment_job
from atss_bench.job import rundir as rd
from atss_bench.launch import ClusterSettings, plan_submission
from atss_bench.launch import slurm_query
from atss_bench.launch.states import (
    UNREACHABLE,
    last_error_line,
    query_slurm_states,
    refresh_job_states,
    store_state_for,
)
from atss_bench.recipes import load_recipe
from atss_bench.store import load_results
from tests.launch.fakes import fake_train

TRACEBACK = """\
submitit INFO (2026-01-01 10:00:00,000) - Starting with JobEnvironment(job_id=44_1)
Traceback (most recent call last):
  File "x.py", line 1, in <module>
atss_bench.errors.TrainingError: non-finite loss at iter 120: {loss_cls=nan}
srun: error: vm: task 0: Exited with exit code 1
"""

CANCELLED_STDERR = """\
slurmstepd-vm: error: *** JOB 57 ON vm CANCELLED AT 2026-11-24T05:54:35 ***
srun: forcing job termination
slurmstepd-vm: error: *** STEP 57.0 ON vm CANCELLED AT 2026-11-24T05:54:35 ***
srun: Job step aborted: Waiting up to 7 seconds for job step to finish.
submitit WARNING (2026-11-24 05:54:35,871) - Bypassing signal SIGTERM
srun: error: vm: task 0: Killed
srun: Force Terminated StepId=57.0
"""


def experiments():
    return load_recipe("recipes/table2.yaml").experiments("mini")


def submit_fake(results: Path, exp, job_id: str, stderr_text: str | None = None) -> None:
    """Record ``exp`` as submitted to SLURM the way launch.submit does."""
    folder = results / "submitit" / "slurm" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    stderr = folder / f"{job_id}_0_log.err"
    if stderr_text is not None:
        stderr.write_text(stderr_text)
    assert mark_pending(results, exp, cluster="slurm", submitit_job_id=job_id,
                        slurm_job_id=job_id, submitit_folder=str(folder),
                        stdout=str(folder / f"{job_id}_0_log.out"), stderr=str(stderr))


def set_running(results: Path, exp, **fields) -> None:
    rd.write_status(rd.run_dir_for(results, exp.run_id), rd.RUNNING,
                    **{"pid": 1, "host": "elsewhere", "slurm_job_id": "99", **fields})


def state_of(results: Path, exp) -> dict:
    return rd.read_json(rd.run_dir_for(results, exp.run_id) / rd.STATUS)


def test_ended_jobs_are_recorded_and_each_run_keeps_its_own_state(tmp_path: Path) -> None:
    exps = experiments()
    submit_fake(tmp_path, exps[0], "44_0", "slurmstepd: error: *** JOB 45 CANCELLED AT x ***\n")
    submit_fake(tmp_path, exps[1], "44_1", TRACEBACK)
    submit_fake(tmp_path, exps[2], "44_2")
    submit_fake(tmp_path, exps[3], "44_3")
    set_running(tmp_path, exps[1])
    set_running(tmp_path, exps[2])
    asked: list[list[str]] = []

    def query(ids):
        asked.append(ids)
        return {"44_0": "CANCELLED by 0", "44_1": "FAILED", "44_2": "TIMEOUT", "44_3": "PENDING"}

    jobs = {j.job_id: j for j in refresh_job_states(tmp_path, query=query)}
    assert asked == [["44_0", "44_1", "44_2", "44_3"]]  # one scheduler call for all
    assert (jobs["44_0"].state, jobs["44_0"].updated) == ("cancelled", True)
    assert jobs["44_0"].reason == "job 44_0 cancelled (CANCELLED by 0)"
    assert jobs["44_1"].state == "failed"
    assert jobs["44_1"].error_line == \
        "atss_bench.errors.TrainingError: non-finite loss at iter 120: {loss_cls=nan}"
    assert jobs["44_1"].reason.endswith("non-finite loss at iter 120: {loss_cls=nan}")
    assert jobs["44_2"].state == "timed-out" and jobs["44_2"].finished
    assert (jobs["44_3"].state, jobs["44_3"].updated) == ("pending", False)
    assert jobs["44_3"].scheduler_active and not jobs["44_3"].finished
    assert jobs["44_1"].stderr.endswith("44_1/44_1_0_log.err")
    frame = load_results(tmp_path).set_index("run_id")
    assert [frame.loc[e.run_id, "status"] for e in exps] == \
        ["cancelled", "failed", "timed-out", "pending"]
    assert frame.loc[exps[2].run_id, "slurm_job_id"] == "99"


def test_a_run_being_trained_or_finished_is_never_overwritten(tmp_path: Path) -> None:
    exps = experiments()[:3]
    for i, exp in enumerate(exps):
        submit_fake(tmp_path, exp, f"50_{i}")
    run_experiment_job(tmp_path, exps[0], train_fn=fake_train)  # done after submission
    set_running(tmp_path, exps[1])
    lock = rd.RunLock(rd.run_dir_for(tmp_path, exps[1].run_id))
    assert lock.acquire()  # someone is training it
    set_running(tmp_path, exps[2], slurm_job_id=None)  # taken over by `atss-bench run`
    try:
        jobs = {j.job_id: j for j in refresh_job_states(
            tmp_path, query=lambda ids: {i: "FAILED" for i in ids})}
    finally:
        lock.release()
    assert jobs["50_0"].state == "done" and not jobs["50_0"].updated
    assert jobs["50_1"].state == "running" and not jobs["50_1"].updated
    assert jobs["50_2"].state == "running" and not jobs["50_2"].updated
    assert state_of(tmp_path, exps[0])["state"] == "done"


def test_no_scheduler_or_dry_run_writes_nothing(tmp_path: Path) -> None:
    exp = experiments()[0]
    submit_fake(tmp_path, exp, "60")
    jobs = refresh_job_states(tmp_path, query=lambda ids: None)  # neither squeue nor sacct
    assert [(j.state, j.scheduler_state, j.updated) for j in jobs] == \
        [("pending", UNREACHABLE, False)]
    assert jobs[0].unreachable and not jobs[0].finished
    jobs = refresh_job_states(tmp_path, record=False, query=lambda ids: {"60": "CANCELLED"})
    assert jobs[0].state == "cancelled" and not jobs[0].updated
    assert state_of(tmp_path, exp)["state"] == "pending"
    assert refresh_job_states(tmp_path, run_ids=["nope"], query=lambda ids: {}) == []
    assert refresh_job_states(tmp_path / "missing") == []


def test_runs_that_were_never_submitted_are_not_jobs(tmp_path: Path) -> None:
    run_experiment_job(tmp_path, experiments()[0], train_fn=fake_train)
    assert refresh_job_states(tmp_path, query=lambda ids: pytest.fail("no job to ask")) == []


@pytest.mark.parametrize("slurm, store", [
    ("CANCELLED by 1000", "cancelled"), ("CANCELLED+", "cancelled"), ("TIMEOUT", "timed-out"),
    ("OUT_OF_MEMORY", "failed"), ("NODE_FAIL", "failed"), ("COMPLETED", "failed"),
    ("RUNNING", None), ("PENDING", None), ("REQUEUED", None), ("", None), ("UNKNOWN", None),
])
def test_slurm_state_mapping(slurm: str, store: str | None) -> None:
    assert store_state_for(slurm) == store


def test_last_error_line_prefers_the_exception_over_scheduler_noise(tmp_path: Path) -> None:
    path = tmp_path / "err"
    path.write_text(TRACEBACK)
    assert last_error_line(path).startswith("atss_bench.errors.TrainingError: non-finite loss")
    path.write_text("srun: error: task 0: Killed\n\n")
    assert last_error_line(path) == "srun: error: task 0: Killed"
    path.write_text(CANCELLED_STDERR)
    assert last_error_line(path) == \
        "slurmstepd-vm: error: *** STEP 57.0 ON vm CANCELLED AT 2026-11-24T05:54:35 ***"
    path.write_text("")
    assert last_error_line(path) is None
    assert last_error_line(tmp_path / "missing") is None and last_error_line(None) is None


def local_stderr(results: Path, pid: int, text: str) -> None:
    """What submitit's local job writes: <results>/submitit/local/<pid>/<pid>_0_log.err."""
    folder = results / "submitit" / "local" / str(pid)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{pid}_0_log.err").write_text(text)


def test_local_jobs_whose_process_is_gone_are_recorded(tmp_path: Path) -> None:
    """From the process and the task's stderr: never from submitit's result pickle."""
    exps = experiments()[:2]
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid is free
    local_stderr(tmp_path, dead.pid, "submitit ERROR (x) - Submitted job triggered an exception\n"
                 "Traceback (most recent call last):\n  File \"x\", line 1\nRuntimeError: boom\n")
    for exp in exps:
        assert mark_pending(tmp_path, exp, cluster="local", submitit_job_id=str(dead.pid))
    alive = subprocess.Popen(["sleep", "30"])
    try:
        assert mark_pending(tmp_path, exps[1], cluster="local", submitit_job_id=str(alive.pid))
        jobs = {j.run_id: j for j in refresh_job_states(tmp_path)}
        assert (jobs[exps[0].run_id].state, jobs[exps[0].run_id].scheduler_state) == \
            ("failed", "FAILED")
        assert jobs[exps[0].run_id].reason == f"job {dead.pid} ended FAILED: RuntimeError: boom"
        assert (jobs[exps[1].run_id].state, jobs[exps[1].run_id].scheduler_state) == \
            ("pending", "RUNNING")
        alive.kill()
        alive.wait()
        jobs = {j.run_id: j for j in refresh_job_states(tmp_path)}
        assert jobs[exps[1].run_id].state == "cancelled"
        assert "ended without a result" in jobs[exps[1].run_id].reason
    finally:
        alive.kill()
        alive.wait()


def test_a_planted_result_pickle_is_never_unpickled(tmp_path: Path) -> None:
    """A results folder from a pull request: unpickling its result file would run code."""
    exp = experiments()[0]
    dead = subprocess.Popen(["true"])
    dead.wait()
    marker = tmp_path / "pwned"
    folder = tmp_path / "submitit" / "local" / str(dead.pid)
    folder.mkdir(parents=True)

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle
    for name in (f"{dead.pid}_0_result.pkl", f"{dead.pid}_submitted.pkl"):
        (folder / name).write_bytes(pickle.dumps(Exploit()))
    assert mark_pending(tmp_path, exp, cluster="local", submitit_job_id=str(dead.pid),
                        submitit_folder=str(folder))
    jobs = refresh_job_states(tmp_path)
    load_results(tmp_path)
    assert not marker.exists()
    assert (jobs[0].state, jobs[0].scheduler_state) == ("cancelled", "CANCELLED")  # no result
    (folder / f"{dead.pid}_0_log.out").write_text(
        "submitit INFO (x) - Job completed successfully\n")  # what the task itself wrote
    jobs = refresh_job_states(tmp_path, run_ids=[exp.run_id])
    assert (jobs[0].state, jobs[0].scheduler_state) == ("cancelled", "")  # recorded: not asked
    assert mark_pending(tmp_path, exp, cluster="local", submitit_job_id=str(dead.pid))
    jobs = refresh_job_states(tmp_path)
    assert (jobs[0].state, jobs[0].scheduler_state) == ("failed", "COMPLETED")
    assert jobs[0].reason == f"job {dead.pid} ended without finishing the run"
    assert not marker.exists()
    pickle.loads((folder / f"{dead.pid}_0_result.pkl").read_bytes())
    assert marker.exists()  # the planted file was live: unpickling it does run its code


def write_status_fields(results: Path, exp, **fields) -> None:
    run_dir = rd.run_dir_for(results, exp.run_id)
    status = rd.read_json(run_dir / rd.STATUS)
    rd.atomic_write_json(run_dir / rd.STATUS, {**status, **fields})


def test_paths_a_record_names_are_never_followed(tmp_path: Path) -> None:
    """stdout / stderr / submitit_folder in status.json are data: logs come from the layout."""
    exps = experiments()[:4]
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("RuntimeError: the secret line\n")
    results = tmp_path / "results"
    for i, exp in enumerate(exps):
        submit_fake(results, exp, f"80_{i}")
        write_status_fields(results, exp, stderr=str(secret), stdout="/etc/passwd",
                            submitit_folder="/etc")
    fifo = results / "submitit" / "slurm" / "80_1" / "80_1_0_log.err"
    os.mkfifo(fifo)  # opening it for reading would block forever
    link = results / "submitit" / "slurm" / "80_2" / "80_2_0_log.err"
    link.symlink_to(secret)
    (results / "submitit" / "slurm" / "80_3").rmdir()
    (results / "submitit" / "slurm" / "80_3").symlink_to(secret.parent, target_is_directory=True)
    (secret.parent / "80_3_0_log.err").write_text("RuntimeError: through a folder link\n")
    jobs = refresh_job_states(results, query=lambda ids: {i: "FAILED" for i in ids})
    assert [j.state for j in jobs] == ["failed"] * 4
    assert all(j.error_line is None and "secret" not in (j.reason or "") for j in jobs)
    assert "folder link" not in jobs[3].reason
    assert jobs[1].stderr == str(fifo) and jobs[0].stdout.endswith("80_0/80_0_0_log.out")
    assert last_error_line(fifo) is None and last_error_line(link) is None


class FakeCommands:
    """squeue / sacct as subprocess results (rc, stdout, stderr); None: the command hangs."""

    def __init__(self, monkeypatch, squeue, sacct) -> None:
        self.answers = {"squeue": squeue, "sacct": sacct}
        self.calls: list[str] = []
        monkeypatch.setattr(slurm_query.shutil, "which", lambda tool: f"/usr/bin/{tool}")
        monkeypatch.setattr(slurm_query, "_run", self.run)

    def run(self, command, timeout_s):
        self.calls.append(command[0])
        answer = self.answers[command[0]]
        return None if answer is None else subprocess.CompletedProcess(command, *answer)


SACCT_OUT = "JobID|State|NodeList\n90_0|COMPLETED|vm\n90_1|CANCELLED by 0|vm\n"
UNREACHABLE_ERR = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"


@pytest.mark.parametrize("squeue, sacct, expected", [
    ((0, "90_2|PENDING\n90_3|RUNNING\n", ""), (0, SACCT_OUT, ""),
     {"90_0": "COMPLETED", "90_1": "CANCELLED by 0", "90_2": "PENDING", "90_3": "RUNNING"}),
    # sacct fails: squeue's answer stands (a queued job is never taken for a gone one)
    ((0, "90_2|PENDING\n90_3|RUNNING\n", ""), (1, "", "sacct: error: slurmdbd down"),
     {"90_2": "PENDING", "90_3": "RUNNING"}),
    ((0, "90_2|PENDING\n", ""), None, {"90_2": "PENDING"}),  # sacct hangs (time-out)
    # squeue fails: sacct's ended jobs stand, the rest cannot be vouched for
    ((1, "", UNREACHABLE_ERR), (0, SACCT_OUT, ""),
     {"90_0": "COMPLETED", "90_1": "CANCELLED by 0", "90_2": UNREACHABLE, "90_3": UNREACHABLE}),
    ((1, "", "slurm_load_jobs error: Invalid job id specified"), (1, "", "down"), {}),
    ((1, "", UNREACHABLE_ERR), (1, "", "sacct: error: slurmdbd down"), None),
])
def test_query_falls_back_to_whichever_scheduler_command_answers(monkeypatch, squeue, sacct,
                                                                 expected) -> None:
    fake = FakeCommands(monkeypatch, squeue, sacct)
    assert query_slurm_states(["90_0", "90_1", "90_2", "90_3"]) == expected
    assert fake.calls == ["squeue", "sacct"]


@pytest.mark.parametrize("squeue", [(1, "", UNREACHABLE_ERR), None])
def test_a_failing_sacct_never_submits_a_queued_run_twice(tmp_path: Path, monkeypatch,
                                                          squeue) -> None:
    exps = experiments()[:3]
    submit_fake(tmp_path, exps[0], "91_0")
    submit_fake(tmp_path, exps[1], "91_1")
    set_running(tmp_path, exps[1], slurm_job_id="91_1")
    FakeCommands(monkeypatch, squeue, (1, "", "sacct: error: slurmdbd down"))
    for record in (False, True):  # --dry-run, then a real plan
        plan = plan_submission(tmp_path, exps, ClusterSettings(), record=record)
        assert [t.action for t in plan.tasks] == ["queued?", "queued?", "submit"]
        assert plan.tasks[0].detail.startswith("job 91_0: scheduler unreachable")
        assert plan.to_submit == [exps[2]]
    assert [state_of(tmp_path, e)["state"] for e in exps[:2]] == ["pending", "running"]

    FakeCommands(monkeypatch, (0, "91_1|RUNNING\n", ""), (1, "", "sacct: error: down"))
    plan = plan_submission(tmp_path, exps, ClusterSettings(), record=False)
    assert [t.action for t in plan.tasks] == ["submit", "queued", "submit"]  # 91_0 left the queue


def test_a_run_failing_because_its_job_was_cancelled_or_requeued(tmp_path: Path) -> None:
    """SIGTERM kills data-loader workers first, so the run records a failure of its own."""
    exps = experiments()[:3]
    for i, exp in enumerate(exps):
        submit_fake(tmp_path, exp, f"70_{i}")
        rd.write_status(rd.run_dir_for(tmp_path, exp.run_id), rd.FAILED,
                        reason="RuntimeError: DataLoader worker (pid 7) is killed by signal")
    states = {"70_0": "CANCELLED by 0", "70_1": "PENDING", "70_2": "FAILED"}
    jobs = {j.job_id: j for j in refresh_job_states(tmp_path, query=lambda ids: states)}
    assert jobs["70_0"].state == "cancelled"
    assert (jobs["70_1"].state, jobs["70_1"].updated) == ("pending", True)
    assert jobs["70_1"].reason.startswith("requeued by SLURM") and "DataLoader" in \
        jobs["70_1"].reason
    assert (jobs["70_2"].state, jobs["70_2"].updated) == ("failed", False)  # its own reason
    assert jobs["70_2"].reason.startswith("RuntimeError: DataLoader")
