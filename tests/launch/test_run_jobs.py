"""`atss-bench run --jobs 2`: the real engine in two spawned worker processes, tiny runs."""
from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.job import rundir as rd
from atss_bench.recipes import load_recipe
from atss_bench.store import load_results
from tests.launch.tiny import write_tiny_profile

runner = CliRunner()


def test_run_with_two_jobs_trains_every_row_once_in_worker_processes(tmp_path: Path,
                                                                      monkeypatch) -> None:
    monkeypatch.setenv("ATSS_BENCH_CACHE", str(tmp_path / "cache"))
    profile = write_tiny_profile(tmp_path)
    results = tmp_path / "results"
    args = ["run", "recipes/table2.yaml", "--profile", str(profile), "--rows",
            "iou_box,scale_box", "--results", str(results)]
    result = runner.invoke(app, [*args, "--jobs", "2"])
    assert result.exit_code == 0, result.output
    frame = load_results(results).set_index("row_id")
    assert sorted(frame.index) == ["iou_box", "scale_box"]
    assert set(frame["status"]) == {"done"} and frame["AP"].notna().all()
    for exp in load_recipe("recipes/table2.yaml").experiments(str(profile)):
        if exp.row_id in frame.index:
            log = rd.run_dir_for(results, exp.run_id) / rd.LOG
            assert sum('"loss"' in line for line in log.read_text().splitlines()) > 0
    again = runner.invoke(app, [*args, "--jobs", "2"])
    assert again.exit_code == 0 and "nothing to train" in again.output
