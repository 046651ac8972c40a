"""`report --curves`: loss vs. iteration per row, from the runs' log.jsonl (a fixture store)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.errors import TrainingError
from atss_bench.job import run_experiment_job
from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS, load_recipe
from atss_bench.report import build_report
from atss_bench.report.curves import read_loss_points, table_curves
from atss_bench.report.summary import summarize_table
from atss_bench.store import RESULTS_ENV, load_results

T2 = "recipes/table2.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


def fake_train(config, run_dir, *, data_root=None, progress=True):
    """loss = 2.0 + 0.2 * seed - 0.1 * iter at iterations 10, 20, 30; the scale/box cell
    (fcos rule, box start) stops at 20 with a non-finite loss."""
    stops = config.model.assign.strategy == "fcos" and config.model.regression.start == "box"
    with open(Path(run_dir) / rd.LOG, "a") as log:
        for i in (10, 20) if stops else (10, 20, 30):
            loss = 2.0 + 0.2 * (config.seed % 2) - 0.1 * (i // 10)
            log.write(json.dumps({"iter": i, "max_iter": 30, "loss": loss, "lr": 0.01}) + "\n")
    if stops:
        raise TrainingError("non-finite loss at iter 21")
    return {"metrics": {m: 20.0 + config.seed for m in METRICS},
            "provenance": {"device": "cpu", "world_size": 1}}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Table 2, mini, 2 seeds of every row but scale_point (never run)."""
    results = tmp_path_factory.mktemp("curves") / "results"
    for exp in load_recipe(T2).experiments("mini", seeds=2):
        if exp.row_id == "scale_point":
            continue
        try:
            run_experiment_job(results, exp, train_fn=fake_train)
        except TrainingError:
            pass
    return results


def test_rows_mean_and_band_over_seeds_failed_runs_to_their_stop(store):
    summary = summarize_table(load_recipe(T2), load_results(store), "mini")
    rows = {c.label: c for c in table_curves(summary, store)}
    assert list(rows) == ["RetinaNet (#A=1), IoU", "FCOS, IoU",
                          "RetinaNet (#A=1), spatial and scale constraint"]
    seed = load_recipe(T2).experiments("mini")[0].seed
    low, high = (1.9, 2.1) if seed % 2 == 0 else (2.1, 1.9)  # iteration 10 of seeds 0 and 1
    [(i, mean, lo, hi), *_] = rows["FCOS, IoU"].band()
    assert (i, lo, hi) == (10, min(low, high), max(low, high))
    assert mean == pytest.approx(2.0)
    stopped = rows["RetinaNet (#A=1), spatial and scale constraint"]
    assert [r.status for r in stopped.runs] == ["failed", "failed"]
    assert [b[0] for b in stopped.band()] == [10, 20]  # drawn to where it stopped


def test_hostile_logs_are_read_as_data(tmp_path):
    run = tmp_path / rd.RUNS / "abc"
    run.mkdir(parents=True)
    lines = ['{"iter": 1, "loss": 3.0}', "not json", '{"iter": 2, "loss": NaN}',
             '{"iter": 3, "loss": "4"}', '{"iter": true, "loss": 1.0}', "[1, 2]",
             '{"iter": -1, "loss": 1.0}', '{"iter": 4, "loss": 5.0}', '{"iter": 4, "loss": 6.0}',
             '{"iter": 5, "eval": {"AP": 1.0}}', '{"iter": 6, "loss": Infinity}', "[" * 100000]
    (run / rd.LOG).write_text("\n".join(lines))
    assert read_loss_points(tmp_path, "abc") == [(1, 3.0), (4, 6.0)]
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"iter": 1, "loss": 9.0}\n')
    (run / rd.LOG).unlink()
    (run / rd.LOG).symlink_to(secret)
    assert read_loss_points(tmp_path, "abc") == []
    assert read_loss_points(tmp_path, "../abc") == []
    assert read_loss_points(tmp_path, "missing") == []


def test_build_report_links_the_png_beside_the_markdown(store, tmp_path):
    report = build_report([load_recipe(T2)], load_results(store), "mini", plot_dir=tmp_path,
                          link_base=tmp_path, curves_from=store)
    png = tmp_path / "table2_mini_loss.png"
    assert report.plots == [png] and png.read_bytes().startswith(PNG)
    assert "![Table 2: training loss](table2_mini_loss.png)" in report.text
    assert report.notes == []


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_curves_and_a_table_without_logs(store, tmp_path, monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    out = tmp_path / "out" / "table2.md"
    result = invoke("report", "--table", "2", "--profile", "mini", "--results", store,
                    "--curves", "--out", out)
    assert result.exit_code == 0, result.output
    assert "](table2_mini_loss.png)" in out.read_text()
    assert (out.parent / "table2_mini_loss.png").read_bytes().startswith(PNG)
    empty = tmp_path / "out" / "table4.md"  # none of its runs is in the store
    result = invoke("report", "--table", "4", "--profile", "mini", "--results", store,
                    "--curves", "--out", empty)
    assert result.exit_code == 0, result.output
    assert "no loss curves, no run of it has logged a training loss yet" in empty.read_text()
    assert "note: Table 4 (mini): no loss curves" in result.output
    assert not (empty.parent / "table4_mini_loss.png").exists()


def test_cli_curves_into_a_read_only_store_write_nothing(store, monkeypatch):
    from atss_bench.cli import report_cmd
    monkeypatch.setattr(report_cmd, "_writable", lambda folder: False)
    result = invoke("report", "--table", "2", "--profile", "mini", "--results", store,
                    "--curves")
    assert result.exit_code == 0, result.output
    assert "plots not written" in result.output and not (store / "reports").exists()
    assert "![Table 2: training loss]" not in result.stdout


def test_cli_formats(store, tmp_path, monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    result = invoke("report", "--table", "2", "--profile", "mini", "--results", store,
                    "--format", "csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("table,profile,dataset,row_id,label,state,n,AP_paper")
    assert [line.split(",")[3] for line in lines[1:]] == ["iou_box", "iou_point", "scale_box",
                                                         "scale_point"]
    result = invoke("report", "--table", "2", "--profile", "mini", "--results", store,
                    "--format", "latex")
    assert result.exit_code == 0 and "\\toprule" in result.stdout
    for args, expected in ((("--format", "html"), "unknown --format 'html'"),
                           (("--format", "csv", "--reference", store),
                            "--claims and --reference write Markdown only")):
        result = invoke("report", "--table", "2", "--results", store, *args)
        assert result.exit_code == 2 and expected in result.output, result.output


def test_cli_all_tables_get_their_curves(store, tmp_path, monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    out = tmp_path / "all.md"
    result = invoke("report", "--all", "--profile", "mini", "--results", store, "--curves",
                    "--out", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "![Table 2: training loss](table2_mini_loss.png)" in text
    assert "Table 4 (mini): no loss curves" in text
    linked = {p.name for p in tmp_path.glob("*_loss.png")}
    assert "table2_mini_loss.png" in linked
    assert all(f"]({name})" in text for name in linked)
