"""Reports never mix datasets: one table per dataset, titled with it; --dataset selects one."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS
from atss_bench.report import build_report, render_table

A, B = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"


def with_datasets(frame: pd.DataFrame, by_row: dict[str, tuple[str, str] | None]) -> pd.DataFrame:
    frame = frame.copy()
    frame["dataset"] = [(by_row.get(r) or (None, None))[0] for r in frame["row_id"]]
    frame["dataset_name"] = [(by_row.get(r) or (None, None))[1] for r in frame["row_id"]]
    return frame


def test_one_dataset_gives_one_table_that_names_it(table, make_frame) -> None:
    t2 = table(2)
    plain = make_frame(t2, "full", {"iou_box": [-0.4], "iou_point": [-0.2, 0.0]})
    one = with_datasets(plain, {"iou_box": (A, "coco"), "iou_point": (A, "coco")})
    text = build_report([t2], one, "full").markdown
    assert text.count("## Table 2") == 1 and "(dataset " not in text
    assert text.endswith(f"in total. Dataset: coco ({A}).\n")
    assert text.replace(f" Dataset: coco ({A}).", "") == render_table(t2, plain, "full")


def test_runs_of_two_datasets_are_never_averaged_together(table, make_frame) -> None:
    t4 = table(4)
    frame = with_datasets(make_frame(t4, "mini", {"k3": [0.5, 1.5], "k5": [0.2], "k7": [0.0]}),
                          {"k3": (A, "coco-a"), "k5": (B, "coco-b"), "k7": None})
    # seed 1 of k3 on the other dataset: the row must not average 0.5 and 1.5
    frame.loc[(frame["row_id"] == "k3") & (frame["seed"] == 1), ["dataset", "dataset_name"]] = \
        [B, "coco-b"]
    text = build_report([t4], frame, "mini").markdown
    titles = [line for line in text.splitlines() if line.startswith("## Table 4")]
    assert titles == [
        f"## Table 4: {t4.title} (dataset coco-a, fingerprint {A})",
        f"## Table 4: {t4.title} (dataset coco-b, fingerprint {B})",
        f"## Table 4: {t4.title} (dataset not recorded (runs from before dataset fingerprints))",
    ]
    k3_rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 3 ")]
    assert [[cell.strip() for cell in row] for row in k3_rows] == [
        ["3", "38.0", "38.5", "+0.5", "n=1"],  # coco-a: seed 0 only
        ["3", "38.0", "39.5", "+1.5", "n=1"],  # coco-b: seed 1 only, never 39.0 ± 0.7
        ["3", "38.0", "not run", "–", "not run"],  # not recorded: k7 only
    ]


def test_sweep_plots_are_drawn_per_dataset(table, make_frame, tmp_path: Path) -> None:
    t4 = table(4)
    frame = with_datasets(make_frame(t4, "mini", {"k3": [0.5], "k5": [0.2]}),
                          {"k3": (A, "coco-a"), "k5": (B, "coco-b")})
    report = build_report([t4], frame, "mini", plot_dir=tmp_path)
    assert sorted(p.name for p in report.plots) == ["table4_mini_aaaaaaaa.png",
                                                     "table4_mini_bbbbbbbb.png"]


def test_report_dataset_option_selects_runs(tmp_path: Path) -> None:
    from atss_bench.recipes import load_recipe

    exps = load_recipe("recipes/table3.yaml").experiments("mini", rows=["retinanet", "fcos"])
    for exp, (fingerprint, name, ap) in zip(exps, ((A, "coco-a", 11.0), (B, "coco-b", 22.0))):
        run_dir = rd.run_dir_for(tmp_path, exp.run_id)
        run_dir.mkdir(parents=True)
        dataset = {"kind": "coco", "fingerprint": fingerprint, "name": name, "root": None,
                   "splits": {}}
        rd.atomic_write_json(run_dir / rd.META, {"run_id": exp.run_id, "table": 3,
                                                 "row_id": exp.row_id, "profile": "mini",
                                                 "seed": 0, "dataset": dataset})
        rd.atomic_write_json(run_dir / rd.METRICS, {"metrics": {m: ap for m in METRICS},
                                                    "provenance": {"dataset": dataset}})
        rd.atomic_write_json(run_dir / rd.STATUS, {"state": "done"})
    cli = CliRunner()
    both = cli.invoke(app, ["report", "--table", "3", "--profile", "mini", "--results",
                            str(tmp_path)])
    assert both.exit_code == 0, both.output
    assert both.output.count("## Table 3") == 2
    only_b = cli.invoke(app, ["report", "--table", "3", "--profile", "mini", "--results",
                              str(tmp_path), "--dataset", "coco-b"])
    assert only_b.exit_code == 0, only_b.output
    assert only_b.output.count("## Table 3") == 1 and "22.0" in only_b.output
    assert "11.0" not in only_b.output and f"Dataset: coco-b ({B})" in only_b.output
