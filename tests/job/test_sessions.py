"""sessions.json: which code trained each part of a resumed run (job.sessions, job.runner)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from atss_bench.job import rundir as rd
from atss_bench.job import run_experiment_job
from atss_bench.job import runner as job_runner
from atss_bench.job import sessions
from atss_bench.job.runner import RETRAIN_DIR
from atss_bench.recipes import METRICS, load_recipe
from atss_bench.report.markdown import provenance_note
from atss_bench.report.summary import summarize_table
from atss_bench.store import load_results, scan_results

A, B = "a" * 40, "b" * 40


def experiment():
    return load_recipe("recipes/table4.yaml").experiments("mini", rows=["k3"])[0]


def code(commit: str | None, dirty: bool | None = False, sha: str | None = None) -> dict:
    return {"git_commit": commit, "git_dirty": dirty, "code_patch": "code.patch" if sha else None,
            "code_patch_sha256": sha, "code_patch_omitted": None}


@pytest.fixture
def use_code(monkeypatch: pytest.MonkeyPatch):
    """use_code(code(...)): what capture_code reports for the next attempts."""
    def use(info: dict) -> None:
        monkeypatch.setattr(job_runner, "capture_code", lambda dest, exclude=(): dict(info))
    return use


class Killed(RuntimeError):
    pass


def resumable_train(kill: bool = False, always_resumed: int | None = None):
    """Resumes from checkpoints/ckpt (its iteration), trains to 4; ``kill``: dies at 2."""
    def train(config, run_dir, *, data_root=None, progress=True):
        ckpt = Path(run_dir) / rd.CHECKPOINTS / "ckpt"
        start = int(ckpt.read_text()) if ckpt.is_file() else 0
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text("2" if kill else "4")
        with open(Path(run_dir) / rd.LOG, "a") as log:
            log.write(json.dumps({"iter": 2 if kill else 4, "max_iter": 4}) + "\n")
        if kill:
            raise Killed("killed at iteration 2")
        resumed = start if start > 0 else None
        return {"metrics": {m: 30.0 for m in METRICS},
                "provenance": {"resumed_from": always_resumed or resumed}}
    return train


def killed_then_resumed(tmp_path: Path, use_code, first: dict, second: dict) -> dict[str, Any]:
    use_code(first)
    with pytest.raises(Killed):
        run_experiment_job(tmp_path, experiment(), train_fn=resumable_train(kill=True))
    use_code(second)
    return run_experiment_job(tmp_path, experiment(), train_fn=resumable_train())


def run_dir(tmp_path: Path) -> Path:
    return rd.run_dir_for(tmp_path, experiment().run_id)


def test_a_run_resumed_from_another_commit_says_so(tmp_path: Path, use_code):
    record = killed_then_resumed(tmp_path, use_code, code(A), code(B, True, "c" * 64))
    prov = record["provenance"]
    assert (prov["git_commit"], prov["resumed_from"], prov["mixed_code"]) == (B, 2, True)
    [earlier] = prov["earlier_sessions"]
    assert (earlier["attempt"], earlier["git_commit"], earlier["git_dirty"]) == (1, A, False)
    stored = json.loads((run_dir(tmp_path) / sessions.SESSIONS).read_text())
    assert [(s["attempt"], s["git_commit"], s["code_patch_sha256"]) for s in stored] == \
        [(1, A, None), (2, B, "c" * 64)]
    assert rd.read_done_metrics(run_dir(tmp_path)) == record


def test_a_run_resumed_on_the_same_code_is_not_mixed(tmp_path: Path, use_code):
    record = killed_then_resumed(tmp_path, use_code, code(A), code(A))
    assert record["provenance"]["mixed_code"] is False
    assert [s["git_commit"] for s in record["provenance"]["earlier_sessions"]] == [A]


@pytest.mark.parametrize("first,second", [
    (code(A), code(A, True, "d" * 64)),                  # clean, then dirty
    (code(A, True, "d" * 64), code(A, True, "e" * 64)),  # two different patches
])
def test_a_dirty_tree_or_another_patch_is_mixed(tmp_path: Path, use_code, first, second):
    assert killed_then_resumed(tmp_path, use_code, first, second)["provenance"]["mixed_code"]


def test_unidentified_code_is_unknown_not_same(tmp_path: Path, use_code):
    """No git checkout (or a dirty tree whose patch was too big): cannot tell."""
    record = killed_then_resumed(tmp_path, use_code, code(None, None), code(None, None))
    assert record["provenance"]["mixed_code"] is None
    assert sessions.mixed_code([code(A, True)], code(A, True)) is None
    assert sessions.mixed_code([code(A, True)], code(B, True)) is True


def test_a_run_that_did_not_resume_has_neither_key(tmp_path: Path, use_code):
    use_code(code(A))
    record = run_experiment_job(tmp_path, experiment(), train_fn=resumable_train())
    assert "earlier_sessions" not in record["provenance"]
    assert "mixed_code" not in record["provenance"]
    stored = json.loads((run_dir(tmp_path) / sessions.SESSIONS).read_text())
    assert [(s["attempt"], s["git_commit"]) for s in stored] == [(1, A)]


def test_force_in_place_starts_a_new_history(tmp_path: Path, use_code):
    use_code(code(A))
    with pytest.raises(Killed):
        run_experiment_job(tmp_path, experiment(), train_fn=resumable_train(kill=True))
    use_code(code(B))
    record = run_experiment_job(tmp_path, experiment(), force=True,
                                train_fn=resumable_train(always_resumed=3))
    assert record["provenance"]["earlier_sessions"] == []  # attempt 1's checkpoints are gone
    assert record["provenance"]["mixed_code"] is False
    stored = json.loads((run_dir(tmp_path) / sessions.SESSIONS).read_text())
    assert [(s["attempt"], s["git_commit"]) for s in stored] == [(2, B)]


def test_no_checkpoint_left_starts_a_new_history(tmp_path: Path, use_code):
    use_code(code(A))
    with pytest.raises(Killed):
        run_experiment_job(tmp_path, experiment(), train_fn=resumable_train(kill=True))
    (run_dir(tmp_path) / rd.CHECKPOINTS / "ckpt").unlink()
    use_code(code(B))
    run_experiment_job(tmp_path, experiment(), train_fn=resumable_train())
    stored = json.loads((run_dir(tmp_path) / sessions.SESSIONS).read_text())
    assert [(s["attempt"], s["git_commit"]) for s in stored] == [(2, B)]


def test_a_retrain_of_a_done_run_starts_a_new_history(tmp_path: Path, use_code):
    killed_then_resumed(tmp_path, use_code, code(A), code(B))
    use_code(code(B))
    record = run_experiment_job(tmp_path, experiment(), force=True,
                                train_fn=resumable_train(always_resumed=3))
    assert (record["provenance"]["earlier_sessions"], record["provenance"]["mixed_code"]) == \
        ([], False)
    stored = json.loads((run_dir(tmp_path) / sessions.SESSIONS).read_text())
    assert [(s["attempt"], s["git_commit"]) for s in stored] == [(3, B)]  # promoted
    assert not (run_dir(tmp_path) / RETRAIN_DIR).exists()


HOSTILE = {
    "not json": b"{[not json",
    "huge": b"[" + b" " * (sessions.MAX_BYTES + 10) + b"]",
    "a million entries": b"[" + b",".join([b"0"] * 10**6) + b"]",
    "an object": json.dumps({"attempt": 1}).encode(),
    "wrong types": json.dumps([{"attempt": "1", "started": None, "git_commit": A,
                                "git_dirty": "no", "code_patch_sha256": None}]).encode(),
    "extra key": json.dumps([{**sessions.UNKNOWN, "__class__": "os.system"}]).encode(),
    "bool attempt": json.dumps([{**sessions.UNKNOWN, "attempt": True}]).encode(),
    "long text": json.dumps([{**sessions.UNKNOWN, "git_commit": "x" * 5000}]).encode(),
    "too many": json.dumps([dict(sessions.UNKNOWN)] * (sessions.MAX_SESSIONS + 1)).encode(),
    "deep": b"[" * 30_000 + b"]" * 30_000,  # under MAX_BYTES: the parser refuses it
    "not utf-8": b"[\xff\xfe]",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_sessions_file_is_unknown_history(tmp_path: Path, use_code, name):
    use_code(code(A))
    with pytest.raises(Killed):
        run_experiment_job(tmp_path, experiment(), train_fn=resumable_train(kill=True))
    (run_dir(tmp_path) / sessions.SESSIONS).write_bytes(HOSTILE[name])
    assert sessions.read_sessions(run_dir(tmp_path)) is None
    record = run_experiment_job(tmp_path, experiment(), train_fn=resumable_train())
    prov = record["provenance"]
    assert (prov["earlier_sessions"], prov["mixed_code"]) == (None, None)  # not trusted
    stored = sessions.read_sessions(run_dir(tmp_path))
    assert stored == [sessions.UNKNOWN, {**sessions.UNKNOWN, "attempt": 2,
                                         "started": stored[1]["started"], "git_commit": A,
                                         "git_dirty": False}]


def test_checkpoints_without_a_sessions_file_are_unknown_history(tmp_path: Path, use_code):
    """Checkpoints left by an attempt that kept no record (code before sessions.json)."""
    use_code(code(A))
    with pytest.raises(Killed):
        run_experiment_job(tmp_path, experiment(), train_fn=resumable_train(kill=True))
    (run_dir(tmp_path) / sessions.SESSIONS).unlink()
    record = run_experiment_job(tmp_path, experiment(), train_fn=resumable_train())
    prov = record["provenance"]
    assert (prov["resumed_from"], prov["earlier_sessions"], prov["mixed_code"]) == (2, None, None)
    assert sessions.read_sessions(run_dir(tmp_path))[0] == sessions.UNKNOWN


def test_a_sessions_file_that_is_not_a_regular_file_is_not_read(tmp_path: Path):
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps([{**sessions.UNKNOWN, "git_commit": A}]))
    (tmp_path / sessions.SESSIONS).symlink_to(target)
    assert sessions.read_sessions(tmp_path) is None
    os.unlink(tmp_path / sessions.SESSIONS)
    os.mkfifo(tmp_path / sessions.SESSIONS)
    assert sessions.read_sessions(tmp_path) is None  # never opened: no blocking


def test_a_long_history_stays_readable(tmp_path: Path):
    entry = {**sessions.UNKNOWN, "git_commit": A, "git_dirty": False}
    history = [{**entry, "attempt": i} for i in range(1, sessions.MAX_SESSIONS + 1)]
    rd.atomic_write_json(tmp_path / sessions.SESSIONS, history)
    earlier = sessions.start_session(tmp_path, {**entry, "attempt": 101}, fresh=False)
    assert earlier == history
    stored = sessions.read_sessions(tmp_path)
    assert stored is not None and len(stored) == sessions.MAX_SESSIONS
    assert stored[0] == sessions.UNKNOWN and stored[-1]["attempt"] == 101


def test_the_report_marks_a_run_resumed_across_commits(tmp_path: Path, use_code):
    killed_then_resumed(tmp_path, use_code, code(A), code(B))
    frame = load_results(tmp_path)
    assert list(frame["mixed_code"]) == [True]
    recipe = load_recipe("recipes/table4.yaml")
    note = provenance_note(summarize_table(recipe, frame, "mini", seeds=1).rows)
    assert "Commit: bbbbbbb (resumed across commits)." in note


def test_the_report_is_unchanged_for_a_run_on_one_commit(tmp_path: Path, use_code):
    killed_then_resumed(tmp_path, use_code, code(B), code(B))
    recipe = load_recipe("recipes/table4.yaml")
    note = provenance_note(summarize_table(recipe, load_results(tmp_path), "mini", seeds=1).rows)
    assert "Commit: bbbbbbb." in note


def test_a_hostile_mixed_code_value_skips_the_record(tmp_path: Path, use_code):
    killed_then_resumed(tmp_path, use_code, code(A), code(B))
    path = run_dir(tmp_path) / rd.METRICS
    stored = json.loads(path.read_text())
    stored["provenance"]["mixed_code"] = "yes"
    path.write_text(json.dumps(stored))
    scan = scan_results(tmp_path)
    assert scan.frame.empty and "mixed_code is not true or false" in " ".join(scan.warnings)
