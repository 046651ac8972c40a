"""The job callable: idempotent, requeueable (fresh instance), DDP variables, rank-0-only records;
and the debug / local executors end to end through the same callable."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import submitit
from submitit.core.utils import UncompletedJobError

from atss_bench.job import rundir as rd
from atss_bench.launch import (
    ClusterSettings,
    plan_submission,
    run_debug_jobs,
    submit_plan,
    submitit_job,
    watch_runs,
)
from atss_bench.launch.states import refresh_job_states
from atss_bench.launch.submitit_job import (
    REQUEUED_REASON,
    SubmititChain,
    SubmititRun,
    distributed_env,
    master_port,
)
from atss_bench.recipes import load_recipe
from atss_bench.store import load_results
from tests.launch import fakes

FAKE = "tests.launch.fakes:fake_train"
FAILING = "tests.launch.fakes:failing_train"


@pytest.fixture(autouse=True)
def _reset_calls():
    fakes.CALLS.clear()


def experiments(seeds: int = 1):
    return load_recipe("recipes/table2.yaml").experiments("mini", seeds=seeds)


def fake_env(**kw):
    base = dict(num_tasks=8, num_nodes=2, global_rank=5, local_rank=1, cluster="slurm",
                hostnames=["gpu003", "gpu004"], raw_job_id="123457", job_id="123456_3")
    return SimpleNamespace(**{**base, **kw})


def test_distributed_env_from_the_job_environment() -> None:
    assert distributed_env(fake_env()) == {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "gpu003", "MASTER_PORT": str(20000 + 123457 % 20000)}
    assert distributed_env(fake_env(num_tasks=1)) == {}
    assert distributed_env(None) == {}
    assert distributed_env(fake_env(cluster="local", num_nodes=1))["MASTER_ADDR"] == "127.0.0.1"
    assert master_port("44") == master_port("44") != master_port("45")


def test_call_is_idempotent_and_checkpoint_requeues_a_fresh_instance(tmp_path: Path) -> None:
    exp = experiments()[0]
    job = SubmititRun(str(tmp_path), exp, train_fn=FAKE)
    first, second = job(), job()
    assert fakes.CALLS == [exp.run_id]  # the second call returned the stored metrics
    assert first == second and first["metrics"]["AP"] == 30.0
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.function == job and delayed.function is not job
    assert not getattr(delayed.function, "_requeue_requested", False)
    assert pickle.loads(pickle.dumps(delayed.function)) == job  # paths and config only


def test_requeue_signal_records_pending_and_the_next_attempt_resumes(tmp_path: Path,
                                                                      monkeypatch) -> None:
    exp = experiments()[0]
    job = SubmititRun(str(tmp_path), exp, train_fn=FAKE)

    def preempted(config, run_dir, **kwargs):
        fakes.CALLS.append("preempted")
        job.checkpoint()  # what submitit's USR2 handler does, then sys.exit(-1)
        raise SystemExit(-1)

    monkeypatch.setattr(fakes, "fake_train", preempted)
    with pytest.raises(SystemExit):
        job()
    status = rd.read_json(rd.run_dir_for(tmp_path, exp.run_id) / rd.STATUS)
    assert (status["state"], status["reason"], status["attempt"]) == \
        ("pending", REQUEUED_REASON, 1)
    monkeypatch.undo()
    record = job.fresh()()
    status = rd.read_json(rd.run_dir_for(tmp_path, exp.run_id) / rd.STATUS)
    assert (status["state"], status["attempt"]) == ("done", 2)
    assert record["metrics"]["AP"] == 30.0 and fakes.CALLS == ["preempted", exp.run_id]


def test_giving_up_after_too_many_time_outs_records_timed_out(tmp_path: Path,
                                                             monkeypatch) -> None:
    exp = experiments()[0]

    def timed_out(config, run_dir, **kwargs):  # what submitit raises at the last time-out
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    monkeypatch.setattr(fakes, "fake_train", timed_out)
    with pytest.raises(UncompletedJobError):
        SubmititRun(str(tmp_path), exp, train_fn=FAKE)()
    status = rd.read_json(rd.run_dir_for(tmp_path, exp.run_id) / rd.STATUS)
    assert status["state"] == "timed-out" and "timed-out too many times" in status["reason"]


def test_ranks_above_zero_train_but_never_write_the_record(tmp_path: Path, monkeypatch) -> None:
    exp = experiments()[0]
    monkeypatch.setattr(submitit_job, "job_environment", lambda: fake_env(global_rank=3))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT"):
        monkeypatch.setenv(key, "unset")  # so that teardown restores the original environment
        monkeypatch.delenv(key)
    run_dir = rd.run_dir_for(tmp_path, exp.run_id)
    run_dir.mkdir(parents=True)
    record = SubmititRun(str(tmp_path), exp, train_fn=FAKE)()
    assert record["metrics"]["AP"] == 30.0 and fakes.CALLS == [exp.run_id]
    assert not (run_dir / rd.STATUS).exists() and not (run_dir / rd.METRICS).exists()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("3", "8")


def test_chain_runs_every_run_even_after_a_failure(tmp_path: Path) -> None:
    exps = experiments()[:2]
    chain = SubmititChain((SubmititRun(str(tmp_path), exps[0], train_fn=FAILING),
                           SubmititRun(str(tmp_path), exps[1], train_fn=FAKE)))
    with pytest.raises(Exception, match="1 of 2 runs failed"):
        chain()
    frame = load_results(tmp_path).set_index("run_id")
    assert frame.loc[exps[0].run_id, "status"] == "failed"
    assert frame.loc[exps[1].run_id, "status"] == "done"
    assert isinstance(chain.checkpoint().function, SubmititChain)


def test_debug_cluster_runs_in_process_and_records_everything(tmp_path: Path) -> None:
    exps = experiments()
    settings = ClusterSettings(cluster="debug")
    plan = plan_submission(tmp_path, exps, settings, train_fn=FAKE)
    assert [t.action for t in plan.tasks] == ["submit"] * 4
    submission = submit_plan(plan)
    assert len(submission.job_ids) == 4
    frame = load_results(tmp_path)
    assert set(frame["status"]) == {"pending"}
    outcomes = run_debug_jobs(submission)
    assert [exc for _, exc in outcomes] == [None] * 4
    assert set(load_results(tmp_path)["status"]) == {"done"}
    again = plan_submission(tmp_path, exps, settings, train_fn=FAKE)
    assert [t.action for t in again.tasks] == ["skip"] * 4  # done runs are never resubmitted
    assert [j.state for j in refresh_job_states(tmp_path)] == ["done"] * 4
    snapshots = list(watch_runs(tmp_path, [e.run_id for e in exps], interval_s=0))
    assert len(snapshots) == 1 and all(j.finished for j in snapshots[0])  # --wait returns


def test_watch_waits_for_a_run_taken_by_another_process(tmp_path: Path) -> None:
    exp = experiments()[0]
    run_dir = rd.run_dir_for(tmp_path, exp.run_id)
    run_dir.mkdir(parents=True)
    rd.write_status(run_dir, rd.RUNNING)  # e.g. `atss-bench run` got it before the job
    watch = watch_runs(tmp_path, [exp.run_id], interval_s=0, timeout_s=0.2)
    assert len(list(watch)) > 1  # polled until the time-out: the run was not over
    rd.write_status(run_dir, rd.DONE)
    assert len(list(watch_runs(tmp_path, [exp.run_id], interval_s=0))) == 1


def test_dedupes_identical_runs(tmp_path: Path) -> None:
    exps = experiments()
    plan = plan_submission(tmp_path, exps + exps[:2], ClusterSettings(cluster="debug"))
    assert len(plan.to_submit) == 4
