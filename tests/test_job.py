"""The job runner: idempotent, locked, failures recorded with a reason, the others still run."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atss_bench.errors import LaunchError, TrainingError
from atss_bench.job import (
    RunBusyError,
    RunJob,
    mark_pending,
    plan_runs,
    resolve_train_fn,
    run_experiment_job,
    run_planned,
)
from atss_bench.job import rundir as rd
from atss_bench.recipes import load_recipe
from atss_bench.store import load_results

CALLS: list[str] = []


def fake_train(config, run_dir, *, data_root=None, progress=True):
    """3 logged iterations, AP = 20 + k/10 + seed; k = 5 fails like a diverged run."""
    CALLS.append(Path(run_dir).name)
    (Path(run_dir) / rd.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    with open(Path(run_dir) / rd.LOG, "a") as log:
        for i in range(1, 4):
            log.write(json.dumps({"iter": i, "max_iter": 3, "loss": 1.0 / i, "lr": 0.01}) + "\n")
    k = config.model.assign.topk
    if k == 5:
        raise TrainingError(f"non-finite loss at iter 2 (k={k})\nsecond line of detail")
    ap = 20.0 + k / 10 + config.seed
    metrics = {m: ap for m in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")}
    return {"metrics": metrics, "provenance": {"device": "cpu", "world_size": 1,
                                               "images_per_sec": 12.5}}


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()


def table4(rows=("k3", "k5", "k7"), seeds=1):
    return load_recipe("recipes/table4.yaml").experiments("mini", seeds=seeds, rows=list(rows))


def test_done_run_is_returned_without_training(tmp_path: Path):
    exp = table4(["k3"])[0]
    first = run_experiment_job(tmp_path, exp, train_fn=fake_train)
    second = run_experiment_job(tmp_path, exp, train_fn=fake_train)
    assert CALLS == [exp.run_id]
    assert first == second
    assert first["metrics"]["AP"] == pytest.approx(20.3)
    prov = first["provenance"]
    assert prov["config_hash"] == exp.run_id and prov["device"] == "cpu"
    assert prov["iter"] == 3 and prov["max_iter"] == 3
    assert set(prov["versions"]) >= {"python", "torch", "torchvision", "atss-bench", "pycocotools"}
    run_dir = rd.run_dir_for(tmp_path, exp.run_id)
    status = rd.read_json(run_dir / rd.STATUS)
    assert status["state"] == "done" and status["started"] and status["finished"]
    meta = rd.read_json(run_dir / rd.META)
    assert (meta["row_id"], meta["table"], meta["profile"], meta["paper"]) == ("k3", 4, "mini",
                                                                              {"AP": 38.0})
    assert "topk: 3" in (run_dir / rd.CONFIG).read_text()


def test_force_retrains_from_scratch(tmp_path: Path):
    exp = table4(["k3"])[0]
    run_experiment_job(tmp_path, exp, train_fn=fake_train)
    run_dir = rd.run_dir_for(tmp_path, exp.run_id)
    (run_dir / rd.CHECKPOINTS / "last.pt").write_text("old")
    run_experiment_job(tmp_path, exp, train_fn=fake_train, force=True)
    assert CALLS == [exp.run_id, ".retrain"]  # retrained beside the done result, then moved in
    assert not (run_dir / rd.CHECKPOINTS / "last.pt").exists()
    assert len((run_dir / rd.LOG).read_text().splitlines()) == 3  # the old log is gone too
    assert rd.read_json(run_dir / rd.STATUS)["attempt"] == 2


def test_failure_is_recorded_with_a_one_line_reason_and_reraised(tmp_path: Path):
    exp = table4(["k5"])[0]
    with pytest.raises(TrainingError, match="non-finite loss"):
        run_experiment_job(tmp_path, exp, train_fn=fake_train)
    run_dir = rd.run_dir_for(tmp_path, exp.run_id)
    status = rd.read_json(run_dir / rd.STATUS)
    assert status["state"] == "failed"
    assert status["reason"] == "TrainingError: non-finite loss at iter 2 (k=5)"
    assert "Traceback" in (run_dir / rd.ERROR).read_text()
    assert "fake_train" in (run_dir / rd.ERROR).read_text()
    assert not (run_dir / rd.METRICS).exists()
    frame = load_results(tmp_path)
    assert list(frame["status"]) == ["failed"] and frame["AP"].isna().all()


def test_a_failed_run_is_retried_and_then_done(tmp_path: Path):
    exp = table4(["k5"])[0]
    with pytest.raises(TrainingError):
        run_experiment_job(tmp_path, exp, train_fn=fake_train)

    def healed(config, run_dir, **kwargs):
        return {"metrics": {m: 30.0 for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
                "provenance": {}}

    record = run_experiment_job(tmp_path, exp, train_fn=healed)
    run_dir = rd.run_dir_for(tmp_path, exp.run_id)
    assert record["metrics"]["AP"] == 30.0
    assert not (run_dir / rd.ERROR).exists()
    status = rd.read_json(run_dir / rd.STATUS)
    assert status["state"] == "done" and status["reason"] is None and status["attempt"] == 2


@pytest.mark.parametrize("result, message", [
    (None, "expected a dict"),
    ({"metrics": {"AP": 1.0}}, "returned no AP50"),
    ({"metrics": {m: float("nan") for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")}},
     "non-finite AP"),
])
def test_incomplete_engine_result_is_a_failed_run(tmp_path: Path, result, message):
    exp = table4(["k3"])[0]
    with pytest.raises(TrainingError, match=message):
        run_experiment_job(tmp_path, exp, train_fn=lambda *a, **k: result)
    status = rd.read_json(rd.run_dir_for(tmp_path, exp.run_id) / rd.STATUS)
    assert status["state"] == "failed" and message in status["reason"]


def test_keyboard_interrupt_is_recorded_too(tmp_path: Path):
    exp = table4(["k3"])[0]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment_job(tmp_path, exp, train_fn=interrupted)
    status = rd.read_json(rd.run_dir_for(tmp_path, exp.run_id) / rd.STATUS)
    assert (status["state"], status["reason"]) == ("failed", "KeyboardInterrupt")


def test_run_planned_keeps_going_after_a_failure(tmp_path: Path):
    experiments = table4(("k3", "k5", "k7"))
    outcomes = run_planned(tmp_path, plan_runs(tmp_path, experiments), train_fn=fake_train)
    assert [o.state for o in outcomes] == ["done", "failed", "done"]
    assert outcomes[1].reason == "TrainingError: non-finite loss at iter 2 (k=5)"
    frame = load_results(tmp_path).set_index("row_id")
    assert frame.loc["k7", "status"] == "done" and frame.loc["k7", "AP"] == pytest.approx(20.7)
    plan = plan_runs(tmp_path, experiments)
    assert [p.action for p in plan] == ["skip", "resume", "skip"]
    assert plan[1].detail.startswith("failed: TrainingError")
    assert [p.action for p in plan_runs(tmp_path, experiments, force=True)] == ["rerun"] * 3


def _start_ordinal(folder: Path) -> int:
    """1 for the first run to start, 2 for the second, ... (exclusive file creation)."""
    folder.mkdir(exist_ok=True)
    for ordinal in range(1, 100):
        try:
            os.close(os.open(folder / f"start-{ordinal}", os.O_CREAT | os.O_EXCL))
            return ordinal
        except FileExistsError:
            continue
    raise AssertionError("too many starts")


def timed_train(config, run_dir, *, data_root=None, progress=True):
    """fake_train in a worker process; records when, where, threads. The runs meet in pairs:
    the 1st and 3rd wait (up to 60 s) until the 2nd and 4th have started, so two jobs that run
    at once overlap however slowly their processes start, and serial jobs never meet."""
    started = time.time()
    starts = Path(run_dir).parent.parent / "test-starts"
    wanted = 2 * ((_start_ordinal(starts) + 1) // 2)
    while len(list(starts.iterdir())) < wanted and time.time() < started + 60:
        time.sleep(0.05)
    result = fake_train(config, run_dir, data_root=data_root, progress=progress)
    result["provenance"].update(pid=os.getpid(), threads=os.environ.get("OMP_NUM_THREADS"),
                                started=started, ended=time.time())
    return result


def test_run_planned_with_jobs_trains_in_parallel_processes(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    experiments = table4(("k3", "k5", "k7", "k9"))
    started, finished = [], []
    outcomes = run_planned(tmp_path, plan_runs(tmp_path, experiments), train_fn=timed_train,
                           jobs=2, on_start=lambda item: started.append(item.experiment.row_id),
                           on_finish=lambda o: finished.append(o.experiment.row_id))
    assert [o.experiment.row_id for o in outcomes] == ["k3", "k5", "k7", "k9"]  # plan order
    assert [o.state for o in outcomes] == ["done", "failed", "done", "done"]
    assert outcomes[1].reason == "TrainingError: non-finite loss at iter 2 (k=5)"
    assert started == ["k3", "k5", "k7", "k9"] and sorted(finished) == sorted(started)
    records = [rd.read_json(rd.run_dir_for(tmp_path, e.run_id) / rd.METRICS)["provenance"]
               for e in experiments if e.row_id != "k5"]
    assert {r["threads"] for r in records} == {"2"}  # 4 cores, 2 jobs
    assert len({os.getpid(), *(r["pid"] for r in records)}) >= 3  # none trained in this process
    k7, k9 = records[1], records[2]  # started as k3 and k5 ended: trained side by side
    assert k9["started"] < k7["ended"] and k7["started"] < k9["ended"]
    assert [p.action for p in plan_runs(tmp_path, experiments)] == ["skip", "resume", "skip",
                                                                    "skip"]


def test_jobs_with_a_train_function_that_cannot_be_pickled_fail_each_run(tmp_path: Path):
    experiments = table4(("k3", "k7"))
    outcomes = run_planned(tmp_path, plan_runs(tmp_path, experiments), jobs=2,
                           train_fn=lambda config, run_dir, **kw: fake_train(config, run_dir))
    assert [o.state for o in outcomes] == ["failed", "failed"]
    assert all("pickle" in o.reason.lower() for o in outcomes), outcomes[0].reason


def test_identical_experiments_of_two_tables_share_one_run(tmp_path: Path):
    t2 = load_recipe("recipes/table2.yaml").experiments("mini", rows=["iou_box"])
    t3 = load_recipe("recipes/table3.yaml").experiments("mini", rows=["retinanet"])
    assert t2[0].run_id == t3[0].run_id
    plan = plan_runs(tmp_path, t2 + t3 + t2)
    assert len(plan) == 1


def test_a_busy_run_is_skipped_or_waited_for(tmp_path: Path):
    exp = table4(["k3"])[0]
    run_dir = rd.run_dir_for(tmp_path, exp.run_id)
    run_dir.mkdir(parents=True)
    holder = rd.RunLock(run_dir)
    assert holder.acquire()
    try:
        assert rd.lock_is_held(run_dir)
        assert plan_runs(tmp_path, [exp])[0].action == "busy"
        with pytest.raises(RunBusyError):
            run_experiment_job(tmp_path, exp, train_fn=fake_train)
        assert not mark_pending(tmp_path, exp)
    finally:
        holder.release()
    assert CALLS == [] and not rd.lock_is_held(run_dir)


def test_mark_pending_then_run(tmp_path: Path):
    exp = table4(["k3"])[0]
    assert mark_pending(tmp_path, exp, slurm_job_id="123_4")
    frame = load_results(tmp_path)
    assert list(frame["status"]) == ["pending"] and list(frame["slurm_job_id"]) == ["123_4"]
    run_experiment_job(tmp_path, exp, train_fn=fake_train)
    assert not mark_pending(tmp_path, exp)  # done: left alone
    assert list(load_results(tmp_path)["status"]) == ["done"]


def test_run_job_pickles_and_names_its_train_function(tmp_path: Path):
    exp = table4(["k3"])[0]
    job = RunJob(str(tmp_path), exp, train_fn=f"{__name__}:fake_train")
    clone = pickle.loads(pickle.dumps(job))
    assert clone()["metrics"]["AP"] == pytest.approx(20.3)
    assert clone()["metrics"]["AP"] == pytest.approx(20.3)
    assert CALLS == [exp.run_id]


def test_missing_engine_is_a_launch_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "atss_bench.engine", None)  # import -> ImportError
    with pytest.raises(LaunchError, match="engine is not available"):
        resolve_train_fn(None)
    with pytest.raises(LaunchError, match="not found"):
        resolve_train_fn("atss_bench.nope:train")


def test_unknown_state_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown state"):
        rd.write_status(tmp_path, "finished")


def test_layering_lower_packages_never_import_higher_ones():
    code = (
        "import sys, atss_bench.job\n"
        "bad = [m for m in sys.modules if m.startswith(('atss_bench.store', 'atss_bench.report',"
        " 'atss_bench.cli', 'atss_bench.launch', 'submitit', 'torch', 'typer', 'rich'))]\n"
        "import atss_bench.store\n"
        "bad += [m for m in sys.modules if m.startswith(('atss_bench.report', 'atss_bench.cli',"
        " 'typer', 'rich', 'matplotlib'))]\n"
        "import atss_bench.report\n"
        "bad += [m for m in sys.modules if m.startswith(('atss_bench.cli', 'typer', 'rich'))]\n"
        "print(sorted(set(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_only_rank_0_keeps_the_record(tmp_path: Path, monkeypatch):
    exp = table4(["k3"])[0]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_experiment_job(tmp_path, exp, train_fn=fake_train)
    assert result["metrics"]["AP"] == pytest.approx(20.3) and CALLS == [exp.run_id]
    run_dir = rd.run_dir_for(tmp_path, exp.run_id)
    assert not (run_dir / rd.STATUS).exists() and not (run_dir / rd.LOCK).exists()
    monkeypatch.setenv("RANK", "0")
    run_experiment_job(tmp_path, exp, train_fn=fake_train)
    assert rd.read_done_metrics(run_dir) is not None


@pytest.mark.parametrize("env, rank", [
    ({}, 0), ({"RANK": "3", "WORLD_SIZE": "4"}, 3), ({"SLURM_PROCID": "2", "SLURM_NTASKS": "8"}, 2),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, 0),
])
def test_process_rank(env, rank):
    from atss_bench.job.runner import process_rank
    assert process_rank(env) == rank
