"""A results folder shared by a lab: files honour the umask, filesystems without flock are one
clear line with the fix, and a read-only store can be looked at (status, report, --dry-run)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.errors import StoreError
from atss_bench.job import mark_pending, run_experiment_job
from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS, load_recipe
from atss_bench.store import RESULTS_ENV

T4 = "recipes/table4.yaml"


def fake_train(config, run_dir, **kwargs):
    with open(Path(run_dir) / rd.LOG, "a") as log:
        log.write(json.dumps({"iter": 1, "max_iter": 1}) + "\n")
    return {"metrics": {m: 20.0 + config.model.assign.topk for m in METRICS},
            "provenance": {"device": "cpu", "world_size": 1}}


def failing_train(config, run_dir, **kwargs):
    raise RuntimeError("boom: the fake run diverged")


def exps(*rows: str):
    return load_recipe(T4).experiments("mini", rows=list(rows))


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _make_store(results: Path) -> None:
    """k3 done, k5 failed (and locked once: its lock file exists), k7 recorded pending."""
    done, failed, pending = exps("k3", "k5", "k7")
    run_experiment_job(results, done, train_fn=fake_train)
    with pytest.raises(RuntimeError):
        run_experiment_job(results, failed, train_fn=failing_train)
    assert mark_pending(results, pending, cluster="slurm", submitit_job_id="12")


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755),
                                                        (0o002, 0o664, 0o775),
                                                        (0o077, 0o600, 0o700)])
def test_store_files_honour_the_umask(tmp_path: Path, umask: int, file_mode: int,
                                      dir_mode: int) -> None:
    previous = os.umask(umask)
    try:
        _make_store(tmp_path / "results")
    finally:
        os.umask(previous)
    files = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"meta.json", "status.json", "metrics.json", "config.yaml",
                                       "log.jsonl", "error.txt", "lock"}
    assert {p.relative_to(tmp_path): oct(p.stat().st_mode & 0o777) for p in files} == \
        {p.relative_to(tmp_path): oct(file_mode) for p in files}
    dirs = [p for p in (tmp_path / "results").rglob("*") if p.is_dir()]
    assert {oct(p.stat().st_mode & 0o777) for p in dirs} == {oct(dir_mode)}


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS])
def test_a_filesystem_without_flock_is_one_line_with_the_fix(tmp_path: Path, monkeypatch,
                                                            code: int) -> None:
    results = tmp_path / "results"
    _make_store(results)  # lock files exist

    def no_flock(fd, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(rd.fcntl, "flock", no_flock)
    run_dir = rd.run_dir_for(results, exps("k3")[0].run_id)
    for attempt in (lambda: rd.RunLock(run_dir).acquire(), lambda: rd.lock_is_held(run_dir)):
        with pytest.raises(StoreError) as caught:
            attempt()
        assert str(run_dir) in caught.value.message
        assert errno.errorcode[code] in caught.value.message
        assert "local disk" in caught.value.hint and "local_lock" in caught.value.hint
    result = _cli("run", T4, "-p", "mini", "--rows", "k3", "--dry-run", "--results", results)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: cannot lock") and "flock" in result.output
    status = _cli("status", "--results", results)  # only reads: still works
    assert status.exit_code == 0 and "k3" in status.output, status.output


def test_a_busy_lock_is_still_busy(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _make_store(results)
    run_dir = rd.run_dir_for(results, exps("k5")[0].run_id)
    lock = rd.RunLock(run_dir)
    assert lock.acquire() and rd.lock_is_held(run_dir)
    assert not rd.RunLock(run_dir).acquire(wait=False)
    lock.release()
    assert not rd.lock_is_held(run_dir) and not rd.lock_is_held(tmp_path / "nowhere")


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_size,
                                       p.lstat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A results folder that cannot be written: a read-only bind mount as root (chmod does not
    stop root), chmod -R a-w otherwise."""
    results = tmp_path / "results"
    _make_store(results)
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(results)], check=True)
        yield results
        subprocess.run(["chmod", "-R", "u+w", str(results)], check=True)
        return
    if shutil.which("mount") is None:
        pytest.skip("root without mount: cannot make a read-only folder")
    bind = subprocess.run(["mount", "--bind", str(results), str(results)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(results)],
                                 capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
        yield results
    finally:
        subprocess.run(["umount", str(results)], check=True)


def test_a_read_only_store_works_for_status_report_and_dry_runs(read_only: Path, tmp_path: Path,
                                                                monkeypatch) -> None:
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    with pytest.raises(OSError):
        (read_only / "probe").write_text("x")
    before = _snapshot(read_only)
    status = _cli("status", "--results", read_only)
    assert status.exit_code == 0, status.output
    assert "k3" in status.output and "k5" in status.output and "k7" in status.output
    report = _cli("report", "--table", "4", "-p", "mini", "--results", read_only)
    assert report.exit_code == 0, report.output
    assert "note: plots not written" in report.output and "--out FILE" in report.output
    assert "| 3 " in report.output
    beside = _cli("report", "--table", "4", "-p", "mini", "--results", read_only, "--out",
                  tmp_path / "out" / "t4.md")
    assert beside.exit_code == 0 and (tmp_path / "out" / "table4_mini.png").is_file()
    for command in (("run", T4), ("submit", T4, "--cluster", "slurm")):
        dry = _cli(*command, "-p", "mini", "--rows", "k3,k5,k7", "--dry-run",
                   "--results", read_only)
        assert dry.exit_code == 0, dry.output
        assert "Traceback" not in dry.output
    export = _cli("results", "export", "--results", read_only)
    assert export.exit_code == 2 and export.output.startswith("error: cannot write")
    assert "--out FILE" in export.output
    assert _snapshot(read_only) == before  # nothing written, not even a lock file


def test_status_shows_an_ended_local_job_it_cannot_record(read_only: Path) -> None:
    """The job's end is shown (not written) when the store is read-only."""
    from atss_bench.launch import refresh_job_states

    status = rd.read_json(rd.run_dir_for(read_only, exps("k7")[0].run_id) / rd.STATUS)
    assert status is not None and status["state"] == "pending"
    jobs = refresh_job_states(read_only, query=lambda ids: {"12": "CANCELLED by 0"})
    assert [(j.state, j.updated) for j in jobs] == [("cancelled", False)]
    assert rd.read_json(rd.run_dir_for(read_only, exps("k7")[0].run_id) / rd.STATUS) == status
