"""``run_planned(jobs=N)``: one spawned process per run; a dead worker fails only its run,
Ctrl-C stops the workers and each records its own run."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from atss_bench.job import batch, cpu_threads_per_job, plan_runs, run_planned
from atss_bench.job import rundir as rd
from atss_bench.recipes import load_recipe
from atss_bench.store import load_results


def table4(rows):
    return load_recipe("recipes/table4.yaml").experiments("mini", rows=list(rows))


def test_a_killed_worker_fails_only_its_own_run(tmp_path: Path):
    experiments = table4(("k3", "k5", "k7"))
    finished = []
    outcomes = run_planned(tmp_path, plan_runs(tmp_path, experiments), jobs=2,
                           train_fn="tests.job.train_fns:kill_k5_train",
                           on_finish=lambda o: finished.append(o.experiment.row_id))
    assert [(o.experiment.row_id, o.state) for o in outcomes] == [
        ("k3", "done"), ("k5", "failed"), ("k7", "done")]  # plan order; k7 ran after k5 died
    assert outcomes[1].reason == "its worker process died (signal 9)"
    assert sorted(finished) == ["k3", "k5", "k7"]
    frame = load_results(tmp_path).set_index("row_id")
    assert dict(frame["status"]) == {"k3": "done", "k5": "failed", "k7": "done"}
    assert frame.loc["k5", "reason"] == "its worker process died (signal 9)"
    assert not any(rd.lock_is_held(rd.run_dir_for(tmp_path, e.run_id)) for e in experiments)
    assert [p.action for p in plan_runs(tmp_path, experiments)] == ["skip", "resume", "skip"]


def test_a_worker_that_exits_without_a_result_fails_its_run(tmp_path: Path):
    experiments = table4(("k5", "k7"))
    outcomes = run_planned(tmp_path, plan_runs(tmp_path, experiments), jobs=2,
                           train_fn="tests.job.train_fns:exit_k5_train")
    assert [o.state for o in outcomes] == ["failed", "done"]
    assert outcomes[0].reason == ("its worker process exited with code 3 before reporting a "
                                  "result")


def test_ctrl_c_stops_the_workers_and_each_records_its_run(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(batch, "STOP_GRACE_S", 0.2)  # no terminal SIGINT reached the worker here
    experiments = table4(("k3", "k7"))
    first = rd.run_dir_for(tmp_path, experiments[0].run_id)

    def on_start(item):
        if item.experiment.row_id == "k7":  # k3's worker is training: Ctrl-C now
            deadline = time.monotonic() + 30
            while not (first / "started").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_planned(tmp_path, plan_runs(tmp_path, experiments), jobs=2, on_start=on_start,
                    train_fn="tests.job.train_fns:slow_train")
    assert time.monotonic() - start < 30  # did not wait for the minute-long run
    worker_pid = int((first / "started").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)  # gone
    status = rd.read_json(first / rd.STATUS)
    assert status["state"] == "failed"
    assert status["reason"] == "Terminated: stopped by SIGTERM (the batch was interrupted)"
    assert not rd.run_dir_for(tmp_path, experiments[1].run_id).exists()  # never started


def test_each_worker_gets_its_share_of_threads_even_when_unpickling_loads_torch(
        tmp_path: Path, monkeypatch):
    """Two runs at once on this machine's cores: OMP_NUM_THREADS must be in the worker's
    environment from its start, or OpenMP (loaded with torch while the train function is
    unpickled) takes every core and two workers fight over them."""
    from tests.job.torch_train_fns import threads_train
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    exps = load_recipe("recipes/table4.yaml").experiments("mini", rows=["k3", "k5"])
    outcomes = run_planned(tmp_path, plan_runs(tmp_path, exps), train_fn=threads_train, jobs=2)
    share = float(cpu_threads_per_job(2))
    assert [(o.state, o.metrics["AP"]) for o in outcomes] == [("done", share), ("done", share)]
    assert "OMP_NUM_THREADS" not in os.environ  # the parent's environment is left as it was
