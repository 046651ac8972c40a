"""Hostile run folders (a results folder is untrusted data): every reader skips a bad record with
exactly one warning line naming the folder and the reason, keeps the good runs, never hangs, and
shows record text (Rich markup included) literally."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench.cli.app import console
from atss_bench.cli.main import app
from atss_bench.job import mark_pending, run_experiment_job
from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS, load_recipe
from atss_bench.store import RESULTS_ENV, export_results, load_results, scan_results

T4 = "recipes/table4.yaml"
MARKUP = ("[bold red]x[/]", "[link=file:///etc]y[/link]", "[blink]z[/blink]")


def fake_train(config, run_dir, **kwargs):
    return {"metrics": {m: 20.0 + config.model.assign.topk for m in METRICS},
            "provenance": {"device": "cpu", "world_size": 1}}


def meta(**fields) -> str:
    return json.dumps({"recipe": T4, "table": 4, "row_id": "k3", "label": "k=3",
                       "profile": "mini", "seed": 0, **fields})


DONE = json.dumps({"state": "done"})
GOOD_METRICS = {"metrics": {m: 30.0 for m in METRICS}, "provenance": {"device": "cpu"}}
DEEP = "[" * 100_000 + "]" * 100_000

# folder name -> (files, a phrase the one warning must contain)
HOSTILE: dict[str, tuple[dict[str, str | bytes], str]] = {
    "seed_float": ({"meta.json": meta(seed=1.5)}, "meta.json: seed is not an integer"),
    "seed_text": ({"meta.json": meta(seed="0")}, "meta.json: seed is not an integer"),
    "seed_bool": ({"meta.json": meta(seed=True)}, "meta.json: seed is not an integer"),
    "seed_nan": ({"meta.json": meta(seed=float("nan"))}, "meta.json: seed is not an integer"),
    "seed_huge": ({"meta.json": meta(seed=10**30)}, "meta.json: seed is not an integer"),
    "table_list": ({"meta.json": meta(table=[4])}, "meta.json: table is not"),
    "table_dict": ({"meta.json": meta(table={"n": 4})}, "meta.json: table is not"),
    "row_id_number": ({"meta.json": meta(row_id=5)}, "meta.json: row_id is not a text"),
    "profile_list": ({"meta.json": meta(profile=["mini"])}, "meta.json: profile is not a text"),
    "label_huge": ({"meta.json": meta(label="x" * 100_000)}, "meta.json: label is not a text"),
    "meta_deep": ({"meta.json": '{"paper": ' + DEEP + "}"}, "meta.json is nested too deeply"),
    "meta_not_utf8": ({"meta.json": b'{"label": "\xff\xfe"}'}, "meta.json is not valid UTF-8"),
    "meta_list": ({"meta.json": "[1, 2]"}, "meta.json holds a JSON list"),
    "meta_too_big": ({"meta.json": meta(label="x" * (2 << 20))},
                     "meta.json is 2097256 bytes (at most 1048576 read)"),
    "meta_torn": ({"meta.json": '{"run_id": "torn_me'}, "meta.json is not valid JSON"),
    "status_deep": ({"meta.json": meta(), "status.json": DEEP}, "status.json is nested too"),
    "status_pid_text": ({"meta.json": meta(), "status.json": '{"state": "running", "pid": "1"}'},
                        "status.json: pid is not"),
    "status_state_list": ({"meta.json": meta(), "status.json": '{"state": ["done"]}'},
                          "status.json: state is not"),
    "status_wall_nan": ({"meta.json": meta(), "status.json": '{"state": "done", '
                         '"wall_time": NaN}'}, "status.json: wall_time is not a finite number"),
    "status_job_path": ({"meta.json": meta(), "status.json": json.dumps(
        {"state": "pending", "submitit_job_id": "../../etc"})}, "submitit_job_id is not a job"),
    "metrics_ap_nan": ({"meta.json": meta(), "status.json": DONE, "metrics.json": json.dumps(
        {"metrics": {**GOOD_METRICS["metrics"], "AP": float("nan")}, "provenance": {}})},
        "metrics.json: AP is not a finite number"),
    "metrics_clash": ({"meta.json": meta(), "status.json": DONE, "metrics.json": json.dumps(
        {"metrics": {**GOOD_METRICS["metrics"], "run_id": 1.0}, "provenance": {}})},
        "metrics.json: 'run_id' is not a metric name"),
    "metrics_text": ({"meta.json": meta(), "status.json": DONE, "metrics.json": json.dumps(
        {"metrics": {**GOOD_METRICS["metrics"], "AR1": "high"}, "provenance": {}})},
        "metrics.json: AR1 is not a number"),
    "provenance_types": ({"meta.json": meta(), "status.json": DONE, "metrics.json": json.dumps(
        {**GOOD_METRICS, "provenance": {"world_size": [1]}})}, "provenance: world_size is not"),
    "evil[bold red]x[blink]\nname": ({}, "meta.json missing"),
}


def _plant_specials(runs: Path, outside: Path) -> dict[str, str]:
    """Files that are not regular files: a FIFO (opening it would block), a symlink out."""
    (runs / "meta_fifo").mkdir()
    os.mkfifo(runs / "meta_fifo" / rd.META)
    (runs / "status_link").mkdir()
    (runs / "status_link" / rd.META).write_text(meta())
    (runs / "status_link" / rd.STATUS).symlink_to(outside)
    (runs / "meta_link").mkdir()
    (runs / "meta_link" / rd.META).symlink_to(outside)
    return {"meta_fifo": "meta.json is not a regular file",
            "status_link": "status.json is a symbolic link",
            "meta_link": "meta.json is a symbolic link"}


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (instead of hanging the suite) if a reader blocks, e.g. on a FIFO."""
    def expire(signum, frame):
        raise TimeoutError("a reader blocked")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 30)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> tuple[Path, list[str], dict[str, str]]:
    """Two good runs (table 4 k3, k5) beside every hostile folder; -> (results, good ids,
    {hostile folder: expected phrase})."""
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    results = tmp_path / "results"
    exps = load_recipe(T4).experiments("mini", rows=["k3", "k5"])
    for exp in exps:
        run_experiment_job(results, exp, train_fn=fake_train)
    runs = results / rd.RUNS
    expected = {}
    for name, (files, phrase) in HOSTILE.items():
        (runs / name).mkdir()
        for file, content in files.items():
            path = runs / name / file
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        expected[name] = phrase
    outside = tmp_path / "passwd"
    outside.write_text(json.dumps({"state": "done", "secret": "root:x:0:0"}))
    expected.update(_plant_specials(runs, outside))
    return results, [e.run_id for e in exps], expected


def _warnings_by_folder(lines: list[str], expected: dict[str, str]) -> dict[str, str]:
    found = {}
    for line in lines:
        folder = next(name for name in expected if printable_name(name) + ": skipped (" in line)
        assert folder not in found, f"two warnings for {folder}"
        found[folder] = line
    return found


def printable_name(name: str) -> str:
    return name.replace("\n", "\\n")


def test_load_results_skips_each_hostile_record_with_one_warning(store, deadline) -> None:
    results, good, expected = store
    scan = scan_results(results)
    assert sorted(scan.frame["run_id"]) == sorted(good)
    assert list(scan.frame["status"]) == ["done", "done"]
    found = _warnings_by_folder(scan.warnings, expected)
    assert sorted(found) == sorted(expected)
    for folder, line in found.items():
        assert expected[folder] in line, line
        assert "\n" not in line and len(line) < 1500
    assert "root:x" not in " ".join(scan.warnings)
    frame = load_results(results)
    assert frame.attrs["warnings"] == scan.warnings and len(frame) == 2


def test_export_skips_hostile_records(store, deadline, tmp_path: Path) -> None:
    results, good, expected = store
    out = export_results(results, "csv", tmp_path / "out.csv")
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and sorted(line.split(",")[0] for line in lines[1:]) == sorted(good)


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _warning_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("command", [
    ("status",), ("status", T4, "--profile", "mini"), ("report", "--table", "4", "-p", "mini"),
    ("results", "export"),
])
def test_cli_readers_exit_0_with_one_warning_line_per_bad_folder(store, deadline, command):
    results, good, expected = store
    result = _cli(*command, "--results", results)
    assert result.exit_code == 0, result.output
    warnings = _warning_lines(result.output)
    assert len(warnings) == len(expected), "\n".join(warnings)
    found = _warnings_by_folder(warnings, expected)
    assert "evil[bold red]x[blink]\\nname: skipped (meta.json missing)" in \
        found["evil[bold red]x[blink]\nname"]  # markup in a folder name is shown literally
    assert "Traceback" not in result.output and "root:x" not in result.output
    if command[0] == "status":
        assert all(run_id in result.output for run_id in good)
    if command[0] == "report":
        assert re.search(r"\| 3 +\| 38\.0 +\| 23\.0 ", result.output)


def _markup_run(results: Path, run_id: str, row_id: str, label: str, reason: str,
                table: str) -> None:
    run_dir = rd.run_dir_for(results, run_id)
    run_dir.mkdir(parents=True)
    (run_dir / rd.META).write_text(json.dumps({"run_id": run_id, "recipe": T4, "table": table,
                                               "row_id": row_id, "label": label,
                                               "profile": "mini", "seed": 0}))
    (run_dir / rd.STATUS).write_text(json.dumps({"state": "failed", "reason": reason}))


def test_markup_in_record_text_is_shown_literally(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(console, "_width", 300)  # no wrapping inside table cells
    results = tmp_path / "results"
    _markup_run(results, "aaaa00000001", MARKUP[0], MARKUP[1], f"boom {MARKUP[2]}", MARKUP[1])
    _markup_run(results, "aaaa00000002", "k3", "k=3", "[red]", "[/]")  # a stray closing tag
    _markup_run(results, "aaaa00000003", "k5\x1b[2J", "k=5", "\x1b]0;pwned\x07 title", "4")
    result = _cli("status", "--results", results)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output  # terminal control sequences are shown, not sent
    assert "failed k5\\x1b[2J [aaaa00000003]: \\x1b]0;pwned\\x07 title" in result.output
    rows = [line for line in result.output.splitlines() if "aaaa00000001" in line]
    assert any(MARKUP[0] in row and MARKUP[1] in row for row in rows), result.output
    assert f"failed {MARKUP[0]} [aaaa00000001]: boom {MARKUP[2]}" in result.output
    assert "failed k3 [aaaa00000002]: [red]" in result.output
    assert "[/]" in result.output


def test_job_lines_show_markup_literally_and_never_the_paths_a_record_names(
        tmp_path: Path, monkeypatch, deadline) -> None:
    """print_job_states: a FIFO at the job's stderr does not hang, a record's stderr path
    (/etc/passwd) is neither read nor printed; no scheduler here: "scheduler unreachable"."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no squeue / sacct
    results = tmp_path / "results"
    exp = load_recipe(T4).experiments("mini", rows=["k3"])[0]
    folder = results / "submitit" / "slurm" / "77_0"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "77_0_0_log.err")
    assert mark_pending(results, exp, cluster="slurm", submitit_job_id="77_0",
                        stderr="/etc/passwd", stdout="/etc/shadow", submitit_folder="/etc")
    run_dir = rd.run_dir_for(results, exp.run_id)
    rd.write_status(run_dir, rd.PENDING, reason=MARKUP[0])
    (run_dir / rd.META).write_text(meta(run_id=exp.run_id, row_id=MARKUP[1]))
    result = _cli("status", "--results", results)
    assert result.exit_code == 0, result.output
    assert f"pending {MARKUP[1]} [{exp.run_id}]: slurm job 77_0 (scheduler unreachable" in \
        result.output.replace("\n", "")
    assert f"stderr: {folder / '77_0_0_log.err'}" in result.output.replace("\n", "")
    assert "/etc/passwd" not in result.output and "/etc/shadow" not in result.output


def test_numbers_too_big_for_a_float_are_refused(tmp_path: Path) -> None:
    """A 400-digit integer parses as JSON but breaks float formatting: never a crash."""
    runs = tmp_path / rd.RUNS
    for name, files in {
        "ap_huge": {"status.json": DONE, "metrics.json": json.dumps(
            {"metrics": {**GOOD_METRICS["metrics"], "AP": 10**400}, "provenance": {}})},
        "wall_huge": {"status.json": '{"state": "done", "wall_time": 1' + "0" * 400 + "}"},
        "pid_huge": {"status.json": json.dumps({"state": "running", "pid": 2**40})},
        "ap_inf": {"status.json": DONE, "metrics.json": '{"metrics": {"AP": Infinity}, '
                                                        '"provenance": {}}'},
    }.items():
        (runs / name).mkdir(parents=True)
        (runs / name / rd.META).write_text(meta())
        for file, text in files.items():
            (runs / name / file).write_text(text)
    scan = scan_results(tmp_path)
    assert scan.frame.empty
    assert sorted(line.split(": skipped (")[1] for line in scan.warnings) == [
        "metrics.json: AP is not a finite number)", "metrics.json: AP is not a finite number)",
        "status.json: pid is not an integer in [0, 2**31))",
        "status.json: wall_time is not a finite number)"]
    assert not rd.complete_metrics(rd.read_json(runs / "ap_huge" / rd.METRICS))


def test_the_real_cli_says_each_skipped_folder_once_on_stderr(tmp_path: Path) -> None:
    """Not also through logging's last-resort handler (CliRunner does not capture that one)."""
    for name in ("bad1", "bad2"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "meta.json").write_text("[1, 2")
    done = subprocess.run([sys.executable, "-m", "atss_bench.cli.main", "status", "--results",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines), lines
