"""`atss-bench submit --cluster slurm` on the real cluster, with runs that train in seconds.

- a job array lands in the store, in `status` and in `report`; resubmitting submits nothing;
- a cancelled task and a failing task are each reported (state, job id, logs, error line);
- a preempted task checkpoints the iteration it is in, is requeued through `checkpoint()`,
  resumes from that checkpoint and ends with exactly the weights and metrics of an
  uninterrupted run.

About 2 minutes on an idle 2-core machine (each run: ~8 s of imports, then seconds of training).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.data import ensure_mini_coco
from atss_bench.engine.checkpoint import load_checkpoint
from atss_bench.engine.monitor import read_log
from atss_bench.job import rundir as rd
from atss_bench.launch import ClusterSettings, refresh_job_states, submit_experiments
from atss_bench.recipes import load_recipe
from atss_bench.store import load_results
from tests.launch.tiny import write_tiny_profile
from tests.slurm.conftest import REPO_ROOT, SlurmCluster

WAIT_S = 240  # a healthy one-node cluster finishes these runs well within this
SUBMIT_LATENCY_S = 10
runner = CliRunner()

TEST_RECIPE = """\
table: 99
title: "launch test: one run cancelled while training, one failing at start"
rows:
  - id: slow
    label: "trains for hours unless cancelled"
    set: {train.max_iter: 100000, train.steps: [90000], train.checkpoint_period: 100000}
  - id: broken
    label: "fails: its dataset does not exist"
    set: {data.kind: coco, data.root: /nonexistent/coco}
"""


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory,
            monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """Jobs import this checkout and share one generated tiny mini-COCO; no user settings."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT), *inherited]))
    for name in list(os.environ):
        if name.startswith("ATSS_BENCH_") and name != "ATSS_BENCH_REQUIRE_SLURM":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    cache = tmp_path_factory.getbasetemp() / "atss-bench-cache"
    monkeypatch.setenv("ATSS_BENCH_CACHE", str(cache))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 one-CPU jobs share 2 cores: no oversubscription
    ensure_mini_coco(cache, seed=0, num_train=12, num_val=4)  # once, not in every job
    monkeypatch.chdir(REPO_ROOT)
    return slurm_cluster


def slurm_args(cluster: SlurmCluster) -> list[str]:
    # --time > 10 min: submitit then treats USR2 without a time-out as a preemption
    return ["--cluster", "slurm", "--partition", cluster.partition, "--cpus-per-task", "1",
            "--time", "20"]


def invoke(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def job_ids(output: str) -> list[str]:
    found = re.search(r"^job ids: (.+)$", output, re.MULTILINE)
    assert found, output
    return found.group(1).split()


def diagnostics(results: Path) -> str:
    squeue = subprocess.run(["squeue"], capture_output=True, text=True, check=False).stdout
    logs = []
    for path in sorted((results / "submitit").glob("slurm/*/*_log.err")):
        logs.append(f"--- {path}\n" + "\n".join(path.read_text().splitlines()[-8:]))
    return f"squeue:\n{squeue}\n" + "\n".join(logs)


def wait_for(condition: Callable[[], bool], results: Path, what: str,
             timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout_s}s\n{diagnostics(results)}")
        time.sleep(0.5)


def statuses(results: Path) -> dict[str, str]:
    frame = load_results(results)
    return dict(zip(frame["row_id"], frame["status"]))


def test_job_array_lands_in_the_store_status_and_report(cluster, tmp_path: Path) -> None:
    profile = write_tiny_profile(tmp_path)
    results = tmp_path / "results"
    submit = ["submit", "recipes/table2.yaml", "--profile", profile, "--rows",
              "iou_box,scale_point", *slurm_args(cluster), "--results", results]
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "atss_bench.cli.main", *map(str, submit)],
                          capture_output=True, text=True, timeout=60, check=False)
    latency = time.monotonic() - start
    assert done.returncode == 0, done.stdout + done.stderr
    assert latency < SUBMIT_LATENCY_S, f"submit took {latency:.1f}s"
    ids = job_ids(done.stdout)
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_0", f"{array}_1"]
    assert f"submitted 2 runs to slurm as job array {array} (2 tasks)" in done.stdout
    records = {r: rd.read_json(Path(d) / rd.STATUS) for r, d in
               zip(load_results(results)["row_id"], load_results(results)["run_dir"])}
    assert {r: s["submitit_job_id"] for r, s in records.items()} == \
        {"iou_box": f"{array}_0", "scale_point": f"{array}_1"}
    assert all(Path(s["stdout"]).parent.name == s["submitit_job_id"] for s in records.values())

    # still queued or running: nothing is submitted twice, --wait follows the array's jobs
    again = invoke(*submit, "--wait", "--poll", "1")
    assert "nothing to submit" in again and "job ids" not in again
    assert "2/2 done" in again and f"{array}_1" in again, again
    assert all(j.finished for j in refresh_job_states(results))
    assert statuses(results) == {"iou_box": "done", "scale_point": "done"}, diagnostics(results)
    frame = load_results(results)
    assert sorted(frame["row_id"]) == ["iou_box", "scale_point"]
    assert frame["AP"].notna().all() and (frame["iter"] == 8).all()

    status = invoke("status", "--results", results)
    assert status.count("done") >= 2 and "failed" not in status
    report = invoke("report", "recipes/table2.yaml", "--profile", profile, "--results", results)
    assert report.count("n=1") == 2, report  # the two cells we ran
    assert "not run" in report  # the two rows we did not
    third = invoke(*submit)
    assert "nothing to submit" in third and "skip: iou_box seed 0" in third


def test_cancelled_and_failed_tasks_are_reported_each_with_its_logs(cluster,
                                                                     tmp_path: Path) -> None:
    profile = write_tiny_profile(tmp_path)
    recipe = tmp_path / "launch_test.yaml"
    recipe.write_text(TEST_RECIPE)
    results = tmp_path / "results"
    # The broken row names a COCO dataset, which would ask for the paper's 8 GPUs: this
    # one-node test cluster has none, so the array is submitted CPU-only on purpose.
    slow_id, broken_id = job_ids(invoke("submit", recipe, "--profile", profile,
                                        *slurm_args(cluster), "--force-cpu",
                                        "--results", results))
    wait_for(lambda: statuses(results).get("slow") == "running", results, "slow run started")
    subprocess.run(["scancel", slow_id], check=True, timeout=30)

    def reported() -> bool:
        invoke("status", "--results", results)  # status refreshes the job states
        return statuses(results) == {"slow": "cancelled", "broken": "failed"}

    wait_for(reported, results, "cancelled and failed recorded", timeout_s=120)
    wait_for(lambda: all(j.finished for j in refresh_job_states(results)), results,
             "both jobs ended")
    out = invoke("status", "--results", results)
    assert re.search(rf"cancelled slow \[\w+\]: slurm job {slow_id} \(CANCELLED", out), out
    assert re.search(rf"failed broken \[\w+\]: slurm job {broken_id} \((FAILED|COMPLETED)", out)
    assert "error: atss_bench.errors.DataError: data root /nonexistent/coco does not exist" in out
    assert f"{broken_id}/{broken_id}_0_log.err" in out and f"{slow_id}_0_log.out" in out
    jobs = {j.row_id: j for j in refresh_job_states(results)}
    assert jobs["slow"].reason.startswith(f"job {slow_id} cancelled (CANCELLED")
    assert jobs["broken"].reason.startswith("DataError: data root /nonexistent/coco")
    assert all(j.finished for j in jobs.values())


def test_preempted_run_resumes_from_its_checkpoint_to_the_same_result(cluster,
                                                                       tmp_path: Path) -> None:
    # ~25 ms an iteration: after the first checkpoint ~10 s of training remain, so the
    # interrupt (< 1 s to arrive) always lands mid-training, even on a loaded machine
    max_iter, period = 400, 8
    profile = write_tiny_profile(tmp_path, name="tiny400", max_iter=max_iter,
                                 checkpoint_period=period)
    exp = load_recipe("recipes/table2.yaml").experiments(str(profile), rows=["iou_box"])[0]
    settings = ClusterSettings(partition=cluster.partition, cpus_per_task=1, time=20)
    reference, preempted = tmp_path / "reference", tmp_path / "preempted"
    submit_experiments(reference, [exp], settings)  # trains without interruption
    job = submit_experiments(preempted, [exp], settings).jobs[0]
    run_dir = rd.run_dir_for(preempted, exp.run_id)
    wait_for(lambda: any((run_dir / rd.CHECKPOINTS).glob("ckpt_*.pt")), preempted,
             "first checkpoint")
    job._interrupt()  # SIGTERM + USR2 before the time limit: a preemption
    wait_for(lambda: (rd.read_json(run_dir / rd.STATUS) or {}).get("attempt") == 2
             or statuses(preempted).get("iou_box") == "done", preempted, "requeued attempt")
    for results in (reference, preempted):
        wait_for(lambda r=results: statuses(r).get("iou_box") == "done", results, "run done")

    status = rd.read_json(run_dir / rd.STATUS)
    assert status["attempt"] == 2, "the run was not interrupted and requeued"
    stored = {name: rd.read_json(rd.run_dir_for(r, exp.run_id) / rd.METRICS)
              for name, r in (("reference", reference), ("preempted", preempted))}
    resumed = stored["preempted"]["provenance"]["resumed_from"]
    # the signals waited for the end of their iteration, which was checkpointed before the
    # requeue: nothing trained is lost (it was up to `period` iterations before)
    # (SIGTERM comes first and submitit ignores it, so it may checkpoint an earlier iteration)
    events = [r for r in read_log(run_dir / rd.LOG) if "event" in r]
    assert events and events[-1]["iter"] == resumed, events
    assert "SIGUSR2" in events[-1]["event"], events
    assert stored["reference"]["provenance"]["resumed_from"] is None
    stdout = Path(status["stdout"]).read_text()
    assert "requeued (preempted or timed out)" in stdout
    assert f"(resumed from iteration {resumed})" in stdout
    assert json.dumps(stored["preempted"]["metrics"]) == json.dumps(stored["reference"]["metrics"])
    logs = [read_log(rd.run_dir_for(r, exp.run_id) / rd.LOG) for r in (reference, preempted)]
    losses = [[(x["iter"], x["loss"]) for x in log if "loss" in x] for log in logs]
    assert losses[0] == losses[1] and losses[0][-1][0] == max_iter
    weights = [load_checkpoint(rd.run_dir_for(r, exp.run_id) / rd.CHECKPOINTS /
                               f"ckpt_{max_iter:08d}.pt")["model"] for r in (reference, preempted)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_submission_sbatch_rejects_is_one_line_and_records_nothing(cluster,
                                                                      tmp_path: Path) -> None:
    results = tmp_path / "results"
    result = runner.invoke(app, ["submit", "recipes/table2.yaml", "--profile", "mini",
                                 "--cluster", "slurm", "--partition", "no-such-partition",
                                 "--results", str(results)])
    assert result.exit_code == 2, result.output
    assert "slurm submission failed" in result.output and "no-such-partition" in result.output
    assert "Traceback" not in result.output
    assert not (results / rd.RUNS).exists()  # no run recorded as pending
