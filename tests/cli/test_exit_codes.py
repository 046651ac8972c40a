"""Exit codes of `run`, `submit --wait` and `check`: 0 only when everything asked for succeeded,
1 when a run failed (or is busy, or a row regressed), 2 for bad input; each --help says so. And
the one warning line for a git-tracked store written from a dirty checkout."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import atss_bench.cli.submit_cmd as submit_cmd
import atss_bench.job.provenance as provenance
import atss_bench.job.runner as job_runner
from atss_bench.check import CheckRow
from atss_bench.cli.main import app
from atss_bench.job import rundir as rd
from atss_bench.launch import JobState
from atss_bench.launch.submit import Submission, SubmittedRun
from atss_bench.recipes import load_recipe
from atss_bench.store import RESULTS_ENV, load_results
from tests.job import train_fns

runner = CliRunner()
T4 = "recipes/table4.yaml"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def table4(*rows):
    return load_recipe(T4).experiments("mini", rows=list(rows))


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "results"


@pytest.fixture
def train_with(monkeypatch):
    def install(fn):
        monkeypatch.setattr(job_runner, "default_train_fn", lambda: fn)
    return install


@pytest.mark.parametrize("command", ["run", "submit", "check"])
def test_help_documents_the_exit_codes(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Exit codes: 0 when" in text and "1 when" in text and "2 on bad input" in text


# --- run ---------------------------------------------------------------------------------------

def test_run_exits_0_when_all_done_and_2_on_bad_input(results, train_with):
    train_with(train_fns.quick_train)
    assert invoke("run", T4, "-p", "mini", "--rows", "k3", "--results", results).exit_code == 0
    again = invoke("run", T4, "-p", "mini", "--rows", "k3", "--results", results)
    assert again.exit_code == 0 and "nothing to train" in again.output
    for bad in (["--rows", "nope"], ["--set", "model.nope=1"], ["--jobs", "0"]):
        result = invoke("run", T4, "-p", "mini", "--results", results, *bad)
        assert result.exit_code == 2, (bad, result.output)
    assert len(load_results(results)) == 1


def test_run_with_jobs_and_a_busy_run_exits_1_after_training_the_others(results, train_with):
    train_with(train_fns.quick_train)  # module level: picklable for the worker processes
    k3, k5, k7 = table4("k3", "k5", "k7")
    busy_dir = rd.run_dir_for(results, k5.run_id)
    busy_dir.mkdir(parents=True)
    holder = rd.RunLock(busy_dir)
    assert holder.acquire()
    try:
        result = invoke("run", T4, "-p", "mini", "--rows", "k3,k5,k7", "--jobs", "2",
                        "--results", results)
        assert result.exit_code == 1, result.output
        assert "1 of 3 runs are being trained by another process" in result.output
        assert "runs failed" not in result.output
        frame = load_results(results).set_index("run_id")
        assert frame.loc[k3.run_id, "status"] == "done" and frame.loc[k7.run_id, "status"] == "done"
        # nothing left to train here, but k5 is still not done: still 1
        again = invoke("run", T4, "-p", "mini", "--rows", "k3,k5,k7", "--results", results)
        assert again.exit_code == 1 and "nothing to train" in again.output
    finally:
        holder.release()


def test_run_with_jobs_and_a_failed_run_exits_1(results, train_with):
    train_with(train_fns.failing_k5_train)
    result = invoke("run", T4, "-p", "mini", "--rows", "k3,k5,k7", "-j", "2", "--results", results)
    assert result.exit_code == 1, result.output
    assert "1 of 3 runs failed" in result.output and "RuntimeError: boom: k5 diverged" in result.output
    assert dict(load_results(results).set_index("row_id")["status"]) == {
        "k3": "done", "k5": "failed", "k7": "done"}


def test_a_failed_force_retrain_exits_1_and_keeps_the_result(results, train_with):
    train_with(train_fns.quick_train)
    invoke("run", T4, "-p", "mini", "--rows", "k5", "--results", results)
    metrics = rd.run_dir_for(results, table4("k5")[0].run_id) / rd.METRICS
    before = metrics.read_bytes()
    train_with(train_fns.failing_k5_train)
    result = invoke("run", T4, "-p", "mini", "--rows", "k5", "--force", "--results", results)
    assert result.exit_code == 1, result.output
    assert "the previous result is kept" in result.output
    assert metrics.read_bytes() == before
    assert list(load_results(results)["status"]) == ["done"]


# --- submit --wait -----------------------------------------------------------------------------

def _fake_cluster(monkeypatch, final_state: str, reason: str | None = None):
    """submit_plan starts nothing; watch_runs reports ``final_state`` once for each run it
    submitted (runs without a job of ours have no JobState, as in launch.states)."""
    submitted: set[str] = set()

    def submit_plan(plan):
        submitted.update(exp.run_id for exp in plan.to_submit)
        return Submission(plan, runs=[SubmittedRun(exp, f"{i}", None, None)
                                      for i, exp in enumerate(plan.to_submit)])

    def watch_runs(results_dir, run_ids, *, interval_s=5.0, jobs=()):
        yield [JobState(run_id, "k3", 0, "0", "local", final_state, "", None, None, reason)
               for run_id in run_ids if run_id in submitted]

    monkeypatch.setattr(submit_cmd, "submit_plan", submit_plan)
    monkeypatch.setattr(submit_cmd, "watch_runs", watch_runs)


@pytest.mark.parametrize("state, code", [("done", 0), ("failed", 1), ("cancelled", 1),
                                         ("timed-out", 1)])
def test_submit_wait_exits_1_unless_every_run_is_done(results, monkeypatch, state, code):
    _fake_cluster(monkeypatch, state, reason="TrainingError: non-finite loss")
    result = invoke("submit", T4, "-p", "mini", "--rows", "k3", "--cluster", "local",
                    "--results", results, "--wait", "--poll", "0.1")
    assert result.exit_code == code, result.output
    assert ("TrainingError: non-finite loss" in result.output) == (code == 1)


def test_submit_wait_follows_a_busy_run_and_judges_it_by_its_record(results, monkeypatch):
    _fake_cluster(monkeypatch, "done")
    (k3,) = table4("k3")
    run_dir = rd.run_dir_for(results, k3.run_id)
    run_dir.mkdir(parents=True)
    holder = rd.RunLock(run_dir)
    assert holder.acquire()  # trained by `atss-bench run` elsewhere: no job of ours
    try:
        rd.write_status(run_dir, rd.FAILED, reason="RuntimeError: elsewhere")
        result = invoke("submit", T4, "-p", "mini", "--rows", "k3", "--cluster", "local",
                        "--results", results, "--wait", "--poll", "0.1")
    finally:
        holder.release()
    assert result.exit_code == 1, result.output
    assert "nothing to submit" in result.output and "RuntimeError: elsewhere" in result.output


def test_submit_debug_with_a_failed_task_exits_1(results, train_with):
    train_with(train_fns.failing_k5_train)
    result = invoke("submit", T4, "-p", "mini", "--rows", "k3,k5", "--cluster", "debug",
                    "--results", results)
    assert result.exit_code == 1, result.output
    assert "RuntimeError: boom: k5 diverged" in result.output


def test_submit_bad_input_exits_2(results):
    result = invoke("submit", T4, "-p", "mini", "--rows", "nope", "--cluster", "local",
                    "--results", results, "--wait")
    assert result.exit_code == 2 and not results.exists()


# --- check -------------------------------------------------------------------------------------

@pytest.mark.parametrize("now, code", [(3.1, 0), (4.0, 0), (None, 1), (2.0, 1)])
def test_check_exit_code_follows_the_verdicts(monkeypatch, now, code):
    rows = [CheckRow("retinanet_atss", "RetinaNet + ATSS", 3.0, 3.0, 0.6),
            CheckRow("fcos_atss", "FCOS + ATSS", 3.0, now, 0.6, reason="boom" if now is None
                     else "")]
    monkeypatch.setattr("atss_bench.cli.check_cmd.run_check", lambda *a, **k: rows)
    result = invoke("check")
    assert result.exit_code == code, result.output


def test_check_update_baseline_with_a_failed_run_exits_1(tmp_path, train_with):
    def diverged(config, run_dir, **_):
        raise RuntimeError("boom: diverged")

    train_with(diverged)
    baseline = tmp_path / "b.json"
    result = invoke("check", "--update-baseline", "--seeds", "2", "--baseline", baseline,
                    "--results", tmp_path / "store")
    assert result.exit_code == 1, result.output
    assert "has no finite AP/AP50" in result.output and "boom: diverged" in result.output
    assert not baseline.exists()


# --- the warning for a git-tracked store -------------------------------------------------------

def _dirty_checkout(root: Path) -> Path:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}
    root.mkdir()
    (root / ".gitignore").write_text("/results/runs/\n")
    (root / "code.py").write_text("A = 1\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)
    (root / "code.py").write_text("A = 2\n")
    return root


def test_run_into_a_tracked_store_from_a_dirty_checkout_warns_once(tmp_path, monkeypatch,
                                                                      train_with):
    checkout = _dirty_checkout(tmp_path / "checkout")
    monkeypatch.setattr(provenance, "_PACKAGE_ROOT", checkout)
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    train_with(train_fns.quick_train)
    tracked = checkout / "results" / "mini"
    result = invoke("run", T4, "-p", "mini", "--rows", "k3,k7", "--results", tracked)
    assert result.exit_code == 0, result.output
    assert result.output.count("warning:") == 1
    line = next(x for x in result.output.splitlines() if "warning:" in x)
    assert "is tracked by git" in line and "commit your changes first" in line
    for exp in table4("k3", "k7"):  # and each record can rebuild that code
        run_dir = rd.run_dir_for(tracked, exp.run_id)
        prov = rd.read_json(run_dir / rd.METRICS)["provenance"]
        assert prov["git_dirty"] is True and prov["code_patch"] == "code.patch"
        assert "+A = 2" in (run_dir / "code.patch").read_text()
        assert "results/mini" not in (run_dir / "code.patch").read_text()
    ignored = invoke("run", T4, "-p", "mini", "--rows", "k3", "--results", checkout / "results")
    assert ignored.exit_code == 0 and "warning:" not in ignored.output
    dry = invoke("run", T4, "-p", "mini", "--rows", "k9", "--results", tracked, "--dry-run")
    assert dry.exit_code == 0 and "warning:" not in dry.output


def test_submit_into_a_tracked_store_warns_once(tmp_path, monkeypatch):
    checkout = _dirty_checkout(tmp_path / "checkout")
    monkeypatch.setattr(provenance, "_PACKAGE_ROOT", checkout)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    _fake_cluster(monkeypatch, "done")
    result = invoke("submit", T4, "-p", "mini", "--rows", "k3,k7", "--cluster", "local",
                    "--results", checkout / "results" / "mini")
    assert result.exit_code == 0, result.output
    assert result.output.count("warning:") == 1 and "is tracked by git" in result.output
