"""The results store: atomic records under concurrency and SIGKILL, a tolerant, complete loader."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from atss_bench.job import RunBusyError, run_experiment_job
from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS, load_recipe
from atss_bench.store import (
    COLUMNS,
    RESULTS_ENV,
    export_results,
    load_results,
    resolve_results_dir,
    scan_results,
)

CTX = mp.get_context("fork")  # children inherit the test module (its fake trainer) as is
STABLE_COLUMNS = ("run_id", "recipe", "table", "row_id", "profile", "seed", "status",
                  "AP", "AP50", "AP75", "APs", "APm", "APl")


def _metrics(config) -> dict[str, float]:
    ap = 10.0 + config.model.assign.topk + config.seed / 100
    return {m: ap + i for i, m in enumerate(METRICS)}


def train_at_barrier(config, run_dir, *, barrier, counter: Path, hold: float = 0.0, **kwargs):
    """Counts its call, then returns only when every sibling process is ready to write too."""
    with open(counter, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    time.sleep(hold)
    if barrier is not None:
        barrier.wait(timeout=60)
    return {"metrics": _metrics(config), "provenance": {"device": "cpu", "world_size": 1}}


def _job(results_dir, experiment, barrier, counter, wait, hold, outcomes):
    def train(config, run_dir, **kwargs):
        return train_at_barrier(config, run_dir, barrier=barrier, counter=counter, hold=hold)

    try:
        record = run_experiment_job(results_dir, experiment, train_fn=train, wait=wait)
        outcomes.put(("done", record["metrics"]["AP"]))
    except RunBusyError:
        outcomes.put(("busy", None))


def _experiments(n: int):
    experiments = load_recipe("recipes/table4.yaml").experiments("mini", seeds=4)
    assert len(experiments) >= n
    return experiments[:n]


def _run_processes(targets) -> None:
    procs = [CTX.Process(target=_job, args=args) for args in targets]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0


def test_32_processes_finishing_at_the_same_moment_leave_32_complete_records(tmp_path: Path):
    experiments = _experiments(32)
    barrier, outcomes = CTX.Barrier(32), CTX.Queue()
    counter = tmp_path / "calls.txt"
    _run_processes([(tmp_path, e, barrier, counter, False, 0.0, outcomes) for e in experiments])
    assert sorted(outcomes.get(timeout=5)[0] for _ in experiments) == ["done"] * 32
    scan = scan_results(tmp_path)
    assert scan.warnings == []
    frame = scan.frame.set_index("run_id")
    assert len(frame) == 32 and set(frame.index) == {e.run_id for e in experiments}
    for exp in experiments:
        row = frame.loc[exp.run_id]
        assert row["status"] == "done" and (row["row_id"], row["seed"]) == (exp.row_id, exp.seed)
        assert [row[m] for m in METRICS] == pytest.approx(list(_metrics(exp.config).values()))
        run_dir = rd.run_dir_for(tmp_path, exp.run_id)
        assert rd.read_done_metrics(run_dir) is not None
        assert not list(run_dir.glob(".*" + rd.TMP_SUFFIX))  # no temp file left behind
    assert len(counter.read_text().splitlines()) == 32


@pytest.mark.parametrize("wait", [False, True])
def test_duplicate_jobs_for_one_run_train_it_once(tmp_path: Path, wait: bool):
    exp = _experiments(1)[0]
    outcomes, counter = CTX.Queue(), tmp_path / "calls.txt"
    _run_processes([(tmp_path, exp, None, counter, wait, 1.0, outcomes) for _ in range(6)])
    results = [outcomes.get(timeout=5) for _ in range(6)]
    assert len(counter.read_text().splitlines()) == 1  # one process trained, the others did not
    done = [ap for state, ap in results if state == "done"]
    if wait:
        assert len(done) == 6 and len(set(done)) == 1  # everyone got the one stored result
    else:
        assert len(done) >= 1 and all(state in ("done", "busy") for state, _ in results)
    frame = load_results(tmp_path)
    assert list(frame["status"]) == ["done"] and frame.attrs["warnings"] == []


# as big as a store file may be (safeio.MAX_JSON_BYTES), so that a write takes a while
BIG = {"metrics": {m: 1.0 for m in METRICS}, "provenance": {"blob": "x" * 1_000_000}}
BIG_BYTES = 900_000


def _write_forever(path: Path) -> None:
    n = 0
    while True:
        n += 1
        rd.atomic_write_json(path, {**BIG, "n": n})


def _inside_a_write(run_dir: Path) -> bool:
    """A temp file exists (atomic writer) or metrics.json is short (an in-place writer)."""
    try:
        short = (run_dir / rd.METRICS).stat().st_size < BIG_BYTES
    except FileNotFoundError:
        short = True
    return short or any(p.suffix == rd.TMP_SUFFIX for p in run_dir.iterdir())


def _kill_writer(run_dir: Path, mid_write: bool) -> None:
    proc = CTX.Process(target=_write_forever, args=(run_dir / rd.METRICS,))
    proc.start()
    deadline = time.monotonic() + 30
    try:
        while (run_dir / rd.METRICS).stat().st_size < BIG_BYTES:  # first big write landed
            assert time.monotonic() < deadline
        if mid_write:  # kill the moment a write is under way
            while not _inside_a_write(run_dir) and time.monotonic() < deadline:
                pass
        else:
            time.sleep(0.05 + (os.getpid() % 7) / 100)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    assert proc.exitcode == -signal.SIGKILL


def test_sigkill_mid_write_leaves_no_corrupt_record(tmp_path: Path):
    exp = _experiments(1)[0]
    run_experiment_job(tmp_path, exp, train_fn=lambda c, d, **k: {"metrics": _metrics(c),
                                                                  "provenance": {}})
    run_dir = rd.run_dir_for(tmp_path, exp.run_id)
    saw_torn_temp_file = False
    for attempt in range(6):
        _kill_writer(run_dir, mid_write=attempt % 2 == 0)
        saw_torn_temp_file |= any(p.suffix == rd.TMP_SUFFIX for p in run_dir.iterdir())
        stored = rd.read_json(run_dir / rd.METRICS)  # the old or a new file, never a torn one
        assert rd.complete_metrics(stored), f"attempt {attempt}: metrics.json is corrupt"
        scan = scan_results(tmp_path)
        assert scan.warnings == [] and list(scan.frame["status"]) == ["done"]
    assert saw_torn_temp_file  # the kill did land inside a write
    rd.remove_stale_temp_files(run_dir)
    assert not [p for p in run_dir.iterdir() if p.suffix == rd.TMP_SUFFIX]


def _write_record(results_dir: Path, run_id: str, status: dict | None, metrics: dict | None,
                  meta: dict | str | None = None) -> Path:
    run_dir = rd.run_dir_for(results_dir, run_id)
    run_dir.mkdir(parents=True)
    meta = {"run_id": run_id, "recipe": "r.yaml", "table": 4, "row_id": run_id, "label": run_id,
            "profile": "mini", "seed": 0} if meta is None else meta
    (run_dir / rd.META).write_text(meta if isinstance(meta, str) else json.dumps(meta))
    if status is not None:
        (run_dir / rd.STATUS).write_text(json.dumps(status))
    if metrics is not None:
        (run_dir / rd.METRICS).write_text(json.dumps(metrics))
    return run_dir


def test_corrupt_and_partial_records_are_skipped_or_flagged_never_raised(tmp_path: Path):
    good = {"metrics": {m: 30.0 for m in METRICS}, "provenance": {"device": "cpu", "max_iter": 9}}
    _write_record(tmp_path, "good", {"state": "done"}, good)
    _write_record(tmp_path, "torn_meta", {"state": "done"}, good, meta='{"run_id": "torn_me')
    _write_record(tmp_path, "no_status", None, None)  # created, never started
    _write_record(tmp_path, "done_no_metrics", {"state": "done"}, None)
    _write_record(tmp_path, "done_torn_metrics", {"state": "done"}, None).joinpath(
        rd.METRICS).write_text('{"metrics": {"AP": 3')
    _write_record(tmp_path, "odd_state", {"state": "exploded"}, None)
    _write_record(tmp_path, "wrong_id", {"state": "done"}, good, meta={"run_id": "other"})
    (tmp_path / rd.RUNS / "no_meta").mkdir()
    (tmp_path / rd.RUNS / "stray_file.txt").write_text("not a run")
    (tmp_path / rd.RUNS / ".hidden").mkdir()
    running = _write_record(tmp_path, "running", {"state": "running"}, None)
    (running / rd.LOG).write_text('{"iter": 40, "max_iter": 90}\n{"iter": 50, "max_iter": 90}\n'
                                  '{"iter": 6')  # torn last line, as while the engine appends

    scan = scan_results(tmp_path)
    frame = scan.frame.set_index("run_id")
    assert sorted(frame.index) == ["done_no_metrics", "done_torn_metrics", "good", "no_status",
                                   "odd_state", "running"]
    assert sorted(Path(w.split(":")[0]).name for w in scan.warnings) == ["no_meta", "torn_meta",
                                                                         "wrong_id"]
    assert frame.loc["good", "status"] == "done" and frame.loc["good", "AP"] == 30.0
    assert frame.loc["good", "max_iter"] == 9
    assert frame.loc["no_status", "status"] == "pending"
    for run_id in ("done_no_metrics", "done_torn_metrics"):  # not done unless metrics complete
        assert frame.loc[run_id, "status"] == "failed"
        assert "metrics.json" in frame.loc[run_id, "reason"]
        assert pd.isna(frame.loc[run_id, "AP"])
    assert frame.loc["odd_state", "status"] == "failed"
    assert (frame.loc["running", "iter"], frame.loc["running", "max_iter"]) == (50, 90)
    assert load_results(tmp_path).attrs["warnings"] == scan.warnings


def test_a_running_record_whose_process_is_gone_is_flagged_stale(tmp_path: Path):
    proc = CTX.Process(target=time.sleep, args=(0,))
    proc.start()
    proc.join()
    import socket
    _write_record(tmp_path, "ghost", {"state": "running", "host": socket.gethostname(),
                                      "pid": proc.pid}, None)
    _write_record(tmp_path, "alive", {"state": "running", "host": socket.gethostname(),
                                      "pid": os.getpid()}, None)
    frame = load_results(tmp_path).set_index("run_id")
    assert frame.loc["ghost", "reason"].startswith("stale: process")
    assert pd.isna(frame.loc["alive", "reason"]) or frame.loc["alive", "reason"] is None


def test_empty_or_missing_store_gives_an_empty_frame_with_every_column(tmp_path: Path):
    frame = load_results(tmp_path / "nothing_here")
    assert frame.empty and tuple(frame.columns) == COLUMNS
    assert set(STABLE_COLUMNS) <= set(frame.columns)


def test_columns_and_types(tmp_path: Path):
    exp = _experiments(1)[0]
    run_experiment_job(tmp_path, exp, train_fn=lambda c, d, **k: {
        "metrics": {**_metrics(c), "AR100": 50.0}, "provenance": {"device": "cpu",
                                                                 "world_size": 1}})
    frame = load_results(tmp_path)
    assert set(COLUMNS) <= set(frame.columns)
    row = frame.iloc[0]
    assert (row["run_id"], row["table"], row["row_id"], row["profile"]) == (exp.run_id, 4, "k3",
                                                                          "mini")
    assert row["AR100"] == 50.0 and row["device"] == "cpu" and row["world_size"] == 1
    assert row["wall_time"] >= 0 and str(frame["finished"].dtype).startswith("datetime64")
    assert row["git_commit"] is None or len(row["git_commit"]) == 40


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trips(tmp_path: Path, fmt: str):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    exp = _experiments(1)[0]
    run_experiment_job(tmp_path, exp, train_fn=lambda c, d, **k: {"metrics": _metrics(c),
                                                                  "provenance": {}})
    out = export_results(tmp_path, fmt, tmp_path / f"out.{fmt}")
    back = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert list(back["run_id"]) == [exp.run_id]
    assert back["AP"].iloc[0] == pytest.approx(_metrics(exp.config)["AP"])


def test_results_dir_from_argument_env_or_default(monkeypatch, tmp_path: Path):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    assert resolve_results_dir(None) == Path("results")
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path))
    assert resolve_results_dir(None) == tmp_path
    assert resolve_results_dir(tmp_path / "x") == tmp_path / "x"


def test_atomic_write_replaces_the_whole_file(tmp_path: Path):
    target = tmp_path / "f.json"
    rd.atomic_write_json(target, {"a": 1})
    rd.atomic_write_json(target, {"b": 2})
    assert rd.read_json(target) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


# --- dataset identity columns and the --dataset filter ---------------------------------------

def _dataset(fingerprint: str, name: str) -> dict:
    return {"kind": "coco", "fingerprint": fingerprint, "name": name, "root": f"/data/{name}",
            "splits": {"val2017": {"images": 5, "annotations_sha256": "0" * 64}}}


def _dataset_store(results: Path) -> None:
    done = {"metrics": {m: 30.0 for m in METRICS}, "provenance": {
        "device": "cpu", "dataset": _dataset("bbbbbbbbbbbbbbbb", "coco-b")}}
    meta = {"run_id": "done_b", "table": 4, "row_id": "k3", "profile": "full", "seed": 0,
            "dataset": _dataset("aaaaaaaaaaaaaaaa", "coco-a")}  # the result's own record wins
    _write_record(results, "done_b", {"state": "done"}, done, meta=meta)
    _write_record(results, "failed_a", {"state": "failed", "reason": "x"}, None, meta={
        **meta, "run_id": "failed_a", "dataset": _dataset("aaaaaaaaaaaaaaaa", "coco-a")})
    _write_record(results, "legacy", {"state": "done"}, {**done, "provenance": {}},
                  meta={**meta, "run_id": "legacy", "dataset": None})
    _write_record(results, "hostile", {"state": "pending"}, None, meta={
        **meta, "run_id": "hostile", "dataset": {"fingerprint": ["x"], "name": "a" * 10**5}})


def test_dataset_columns_come_from_the_result_then_meta_and_are_never_trusted(tmp_path: Path):
    _dataset_store(tmp_path)
    scan = scan_results(tmp_path)
    frame = scan.frame.set_index("run_id")
    assert not scan.warnings and {"dataset", "dataset_name"} <= set(COLUMNS)
    assert (frame.loc["done_b", "dataset"], frame.loc["done_b", "dataset_name"]) == (
        "bbbbbbbbbbbbbbbb", "coco-b")
    assert (frame.loc["failed_a", "dataset"], frame.loc["failed_a", "dataset_name"]) == (
        "aaaaaaaaaaaaaaaa", "coco-a")
    for run_id in ("legacy", "hostile"):
        assert pd.isna(frame.loc[run_id, "dataset"]) and pd.isna(frame.loc[run_id, "dataset_name"])


def test_select_dataset_by_fingerprint_prefix_or_name(tmp_path: Path):
    from atss_bench.errors import StoreError
    from atss_bench.store import select_dataset

    _dataset_store(tmp_path)
    frame = load_results(tmp_path)
    assert sorted(select_dataset(frame, "aaaa")["run_id"]) == ["failed_a"]
    assert sorted(select_dataset(frame, "BBBB")["run_id"]) == ["done_b"]  # hex, any case
    assert sorted(select_dataset(frame, "coco-b")["run_id"]) == ["done_b"]
    assert select_dataset(frame, "coco").empty and select_dataset(frame, "c0ffee").empty
    assert len(select_dataset(frame, None)) == 4
    with pytest.raises(StoreError, match="--dataset is empty"):
        select_dataset(frame, "  ")


def test_status_and_export_filter_by_dataset(tmp_path: Path):
    from typer.testing import CliRunner

    from atss_bench.cli.main import app

    _dataset_store(tmp_path)
    cli = CliRunner()
    status = cli.invoke(app, ["status", "--results", str(tmp_path), "--dataset", "coco-a"])
    assert status.exit_code == 0, status.output
    assert "failed_a" in status.output and "done_b" not in status.output
    none = cli.invoke(app, ["status", "--results", str(tmp_path), "--dataset", "[red]x"])
    assert none.exit_code == 0 and "no runs made on dataset '[red]x' in" in none.output
    out = tmp_path / "b.csv"
    export = cli.invoke(app, ["results", "export", "--results", str(tmp_path), "--out", str(out),
                              "--dataset", "bbbb"])
    assert export.exit_code == 0, export.output
    back = pd.read_csv(out)
    assert list(back["run_id"]) == ["done_b"] and list(back["dataset_name"]) == ["coco-b"]
    empty = cli.invoke(app, ["results", "export", "--results", str(tmp_path), "--dataset", ""])
    assert empty.exit_code == 2 and "--dataset is empty" in empty.output
