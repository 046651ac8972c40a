"""CLI `run`, `status`, `report`, `results export` with a fake trainer (no engine, no torch)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import atss_bench.job.runner as job_runner
from atss_bench.cli.main import app
from atss_bench.errors import TrainingError
from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS, load_recipe
from atss_bench.store import RESULTS_ENV, load_results

runner = CliRunner()
T4 = "recipes/table4.yaml"


class FakeTrainer:
    """Logs 3 iterations; AP = 20 + k/10 + seed; rows whose k is in ``fail_k`` diverge."""

    def __init__(self, fail_k: tuple[int, ...] = ()) -> None:
        self.fail_k = fail_k
        self.calls: list[tuple[int, int]] = []

    def __call__(self, config, run_dir, *, data_root=None, progress=True):
        k = config.model.assign.topk
        self.calls.append((k, config.seed))
        with open(Path(run_dir) / rd.LOG, "a") as log:
            for i in (1, 2, 3):
                log.write(json.dumps({"iter": i, "max_iter": 3, "loss": 0.5, "lr": 0.01}) + "\n")
        if k in self.fail_k:
            raise TrainingError(f"non-finite loss at iter 2 (k={k})")
        return {"metrics": {m: 20.0 + k / 10 + config.seed for m in METRICS},
                "provenance": {"device": "cpu", "world_size": 1}}


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    return tmp_path / "results"


@pytest.fixture
def trainer(monkeypatch):
    """Install a fake trainer where the CLI gets its default (the engine) from."""
    def install(fake: FakeTrainer) -> FakeTrainer:
        monkeypatch.setattr(job_runner, "default_train_fn", lambda: fake)
        return fake
    return install


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _assert_one_line_error(result, expected: str):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error:") and expected in text, text


def test_run_records_failures_keeps_going_then_skips_what_is_done(results, trainer):
    first = trainer(FakeTrainer(fail_k=(5,)))
    result = invoke("run", T4, "--profile", "mini", "--rows", "k3,k5,k7", "--results", results)
    assert result.exit_code == 1, result.output
    assert first.calls == [(3, 0), (5, 0), (7, 0)]  # k7 still ran after k5 failed
    assert "TrainingError: non-finite loss at iter 2 (k=5)" in result.output
    frame = load_results(results).set_index("row_id")
    assert dict(frame["status"]) == {"k3": "done", "k5": "failed", "k7": "done"}
    assert frame.loc["k5", "reason"] == "TrainingError: non-finite loss at iter 2 (k=5)"

    second = trainer(FakeTrainer())
    result = invoke("run", T4, "--profile", "mini", "--rows", "k3,k5,k7", "--results", results)
    assert result.exit_code == 0, result.output
    assert second.calls == [(5, 0)]  # only the failed run is retried

    third = trainer(FakeTrainer())
    result = invoke("run", T4, "--profile", "mini", "--rows", "k3,k5,k7", "--results", results)
    assert result.exit_code == 0 and third.calls == []
    assert "nothing to train" in result.output


def test_identical_runs_are_trained_once(results, trainer):
    fake = trainer(FakeTrainer())
    result = invoke("run", T4, "-p", "mini", "--rows", "k9,k9", "--seeds", "2",
                    "--results", results)
    assert result.exit_code == 0, result.output
    assert fake.calls == [(9, 0), (9, 1)]
    assert len(load_results(results)) == 2


def test_dry_run_lists_and_writes_nothing(results, trainer):
    trainer(FakeTrainer())
    invoke("run", T4, "-p", "mini", "--rows", "k3", "--results", results)
    fake = trainer(FakeTrainer())
    result = invoke("run", T4, "-p", "mini", "--rows", "k3,k5", "--results", results, "--dry-run")
    assert result.exit_code == 0, result.output
    assert fake.calls == [] and len(load_results(results)) == 1
    k3, k5 = (e.run_id for e in load_recipe(T4).experiments("mini", rows=["k3", "k5"]))
    lines = result.output.splitlines()
    assert re.search(r"skip\s.*done, AP 20\.3", next(line for line in lines if k3 in line))
    assert re.search(r"\brun\b", next(line for line in lines if k5 in line))
    assert "1 to train, 1 skipped" in result.output


def test_set_override_and_data_root_reach_the_trainer(results, monkeypatch):
    seen = {}

    def fake(config, run_dir, *, data_root=None, progress=True):
        seen.update(max_iter=config.train.max_iter, data_root=data_root, progress=progress)
        return {"metrics": {m: 1.0 for m in METRICS}, "provenance": {}}

    monkeypatch.setattr(job_runner, "default_train_fn", lambda: fake)
    result = invoke("run", T4, "-p", "mini", "--rows", "k3", "--set", "train.max_iter=7",
                    "--data-root", "/data/mini", "--results", results)
    assert result.exit_code == 0, result.output
    # CliRunner's stdout is no terminal: the engine is asked for its plain progress lines
    assert seen == {"max_iter": 7, "data_root": "/data/mini", "progress": True}


def test_results_dir_from_the_environment(tmp_path, monkeypatch, trainer):
    trainer(FakeTrainer())
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "env_results"))
    assert invoke("run", T4, "-p", "mini", "--rows", "k3").exit_code == 0
    assert len(load_results(tmp_path / "env_results")) == 1


def test_status_shows_states_progress_and_failures(results, trainer):
    trainer(FakeTrainer(fail_k=(5,)))
    invoke("run", T4, "-p", "mini", "--rows", "k3,k5", "--results", results)
    k3, k5 = (e.run_id for e in load_recipe(T4).experiments("mini", rows=["k3", "k5"]))

    result = invoke("status", "--results", results)
    assert result.exit_code == 0, result.output
    assert re.search(rf"k3\s.*{k3}\s.*done\s.*3/3\s.*20\.3", result.output)
    assert re.search(rf"k5\s.*{k5}\s.*failed", result.output)
    assert "TrainingError: non-finite loss at iter 2 (k=5)" in result.output
    assert str(results / "runs" / k5 / "log.jsonl") in result.output.replace("\n", "")

    by_recipe = invoke("status", T4, "--profile", "mini", "--results", results)
    assert by_recipe.exit_code == 0, by_recipe.output
    assert len(re.findall(r"not run", by_recipe.output)) == 7  # k7..k19


def test_status_of_an_empty_store(results):
    result = invoke("status", "--results", results)
    assert result.exit_code == 0 and "no runs" in result.output


def test_report_shape_and_states(results, trainer):
    trainer(FakeTrainer(fail_k=(5,)))
    invoke("run", T4, "-p", "mini", "--rows", "k3,k5", "--seeds", "2", "--results", results)
    result = invoke("report", "--table", "4", "--profile", "mini", "--results", results)
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("## Table 4: Analysis of different values of hyperparameter k")
    assert "not comparable to the paper's absolute numbers" in out
    assert "| k " in out and "AP paper" in out and "AP ours" in out
    assert re.search(r"\| 3 +\| 38\.0 +\| 20\.8 ± 0\.7 +\| -17\.2 +\| n=2 ", out)
    assert re.search(r"\| 5 +\| 38\.8 +\| failed +\| – +\| 2 failed: TrainingError", out)
    assert re.search(r"\| 19 +\| 38\.9 +\| not run ", out)
    assert (results / "reports" / "table4_mini.png").is_file()


def test_report_to_a_file_with_its_plot_beside_it(results, trainer, tmp_path):
    trainer(FakeTrainer())
    invoke("run", T4, "-p", "mini", "--rows", "k3", "--results", results)
    out = tmp_path / "out" / "t4.md"
    result = invoke("report", T4, "-p", "mini", "--results", results, "--out", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "![Table 4: ours vs. the paper](table4_mini.png)" in text
    assert (out.parent / "table4_mini.png").is_file()


def test_report_all_tables(results):
    result = invoke("report", "--all", "--results", results)
    assert result.exit_code == 0, result.output
    tables = re.findall(r"^## Table (\d+):", result.output, re.MULTILINE)
    assert [int(n) for n in tables] == list(range(1, 10))  # 1-8 the paper's, 9 beyond it


@pytest.mark.parametrize("args, expected", [
    (("run", "recipes/nope.yaml"), "recipe not found"),
    (("report", "recipes/nope.yaml"), "recipe not found"),
    (("status", "recipes/nope.yaml"), "recipe not found"),
    (("report", "--table", "12"), "no shipped recipe for table '12'"),
    (("report",), "give exactly one of RECIPE, --table N, --all or --claims"),
    (("report", "--all", "--table", "2"), "give exactly one of"),
    (("report", "--claims", "--table", "2"), "--claims checks the shipped tables"),
    (("run", T4, "--rows", "k4"), "no row 'k4'"),
    (("results", "export", "--format", "xlsx"), "unknown export format 'xlsx'"),
])
def test_user_mistakes_are_one_line_exit_2(results, args, expected):
    _assert_one_line_error(invoke(*args, "--results", results), expected)


def test_missing_engine_is_one_line_exit_2_before_any_run(results, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "atss_bench.engine", None)
    result = invoke("run", T4, "-p", "mini", "--rows", "k3", "--results", results)
    _assert_one_line_error(result, "training engine is not available")
    assert load_results(results).empty


def test_results_export(results, trainer):
    trainer(FakeTrainer())
    invoke("run", T4, "-p", "mini", "--rows", "k3,k5", "--results", results)
    result = invoke("results", "export", "--results", results)
    assert result.exit_code == 0, result.output
    lines = (results / "results.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("run_id,recipe,table,row_id")


def test_report_and_status_find_runs_made_with_set_overrides(results, trainer):
    trainer(FakeTrainer())
    sets = ("--set", "train.max_iter=7")
    invoke("run", T4, "-p", "mini", "--rows", "k3", *sets, "--results", results)
    plain = invoke("report", T4, "-p", "mini", "--results", results).output
    assert re.search(r"\| 3 +\| 38\.0 +\| not run ", plain)
    with_set = invoke("report", T4, "-p", "mini", *sets, "--results", results).output
    assert re.search(r"\| 3 +\| 38\.0 +\| 20\.3 +\| -17\.7 +\| n=1 ", with_set)
    status = invoke("status", T4, "-p", "mini", *sets, "--results", results).output
    assert len(re.findall(r"not run", status)) == 8 and re.search(r"k3\s.*done", status)
