"""`atss-bench inspect-assign`: what each sample-selection rule makes of a dataset's GT boxes."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from atss_bench.cli.app import app, console
from atss_bench.cli.recipes_cmd import parse_sets
from atss_bench.cli.report_cmd import RESULTS_HELP
from atss_bench.errors import ConfigError

DATA_KINDS = ("mini", "coco")


@app.command("inspect-assign")
def inspect_assign_command(
    data: Optional[str] = typer.Option(
        None, "--data", help="mini: the profile's synthetic mini-COCO; coco: data.root or "
                             "$ATSS_BENCH_DATA (default: the profile's data.kind)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="A COCO-layout folder."),
    split: str = typer.Option("val2017", "--split"),
    profile: Optional[str] = typer.Option(
        None, "--profile", "-p", help="Resize, anchors and data (default: mini with --data "
                                      "mini, else full)."),
    rules: Optional[str] = typer.Option(
        None, "--rules", help="Comma-separated rules: built-in names or plug-ins "
        "(pkg.module:function, file.py:function) (default: max_iou,fcos,topk_scale,atss)."),
    images: int = typer.Option(2, "--images", min=0, help="Pictures of the first N images."),
    image_id: Optional[list[int]] = typer.Option(None, "--image-id",
                                                 help="Picture of this image (repeatable)."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output folder (default results/inspect/<dataset>)."),
    sets: Optional[list[str]] = typer.Option(
        None, "--set", help="Override key=value (model.assign.* only with a single rule)."),
    checkpoint: Optional[str] = typer.Option(
        None, "--checkpoint", help="A trained run (its folder, its id in --results, or a "
        "checkpoint file) whose predictions feed task_aligned, simota and other "
        "prediction-aware rules."),
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
) -> None:
    """Positives per GT, per pyramid level, by object size and aspect ratio, for each rule."""
    from atss_bench.inspect import RULES, resolve_dataset_root, resolve_rule_configs
    from atss_bench.inspect.run import run_inspection
    from atss_bench.inspect.trained import load_trained_model
    from atss_bench.store import resolve_results_dir

    if data is not None and data not in DATA_KINDS:
        raise ConfigError(f"--data {data!r}: expected one of {', '.join(DATA_KINDS)}",
                          hint="or give a folder with --data-root")
    if data == "mini" and data_root is not None:
        raise ConfigError("--data mini and --data-root both given", hint="choose one")
    overrides = parse_sets(sets)
    if data is not None:
        overrides["data.kind"] = data
    profile = profile or ("mini" if data == "mini" else "full")
    configs = resolve_rule_configs(profile, rules or RULES, overrides,
                                   with_model=checkpoint is not None)
    model = (load_trained_model(checkpoint, resolve_results_dir(results))
             if checkpoint is not None else None)
    root = resolve_dataset_root(next(iter(configs.values())), data_root)
    out_dir = out or Path("results") / "inspect" / root.name
    name = f"assign-{split}-{Path(profile).stem}"
    result = run_inspection(root, split, configs, out_dir, image_ids=image_id,
                            num_images=images, name=name, model=model)
    if model is not None:
        console.print(model.describe(), highlight=False, markup=False)
    console.print(render_table(result.table, f"{root.name} {split}, profile {profile}"))
    if result.agreement is not None:
        console.print(render_agreement_table(result.agreement))
    gt = result.ground_truth
    console.print(f"{gt.num_images} images, {gt.num_gt} GT boxes, {len(configs)} rules in "
                  f"{result.seconds:.1f} s", highlight=False)
    written = (result.markdown_path, result.csv_path, result.agreement_csv_path,
               *result.pictures)
    for path in (p for p in written if p is not None):
        console.print(f"wrote {path}", highlight=False)


def render_table(frame: pd.DataFrame, title: str) -> Table:
    """The statistics as a compact rich table: a section per rule, a row per GT group."""
    levels = [c for c in frame.columns if c.endswith("_pct") and c != "zero_pos_pct"]
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
                  collapse_padding=True)
    table.add_column("GTs by", no_wrap=True)
    for header in ("GTs", "pos/GT", "med", "p10", "0pos%", "IoU"):
        table.add_column(header, justify="right", no_wrap=True)
    for column in levels:
        table.add_column(column.replace("_pct", "%"), justify="right", no_wrap=True)
    for rule, rows in frame.groupby("rule", sort=False):
        table.add_row(f"[bold]{rule}[/bold]")
        for _, row in rows.iterrows():
            table.add_row(_group_label(row["group"], row["bin"]), str(int(row["gts"])),
                          _number(row["pos_per_gt_mean"], 1), _number(row["pos_per_gt_median"], 1),
                          _number(row["pos_per_gt_p10"], 1), _number(row["zero_pos_pct"], 1),
                          _number(row["mean_iou"], 2), *(_number(row[c], 0) for c in levels))
        table.add_section()
    return table


def render_agreement_table(frame: pd.DataFrame) -> Table:
    """The agreement with the first rule (``inspect.agreement``): a section per other rule."""
    reference = escape(str(frame["reference"].iloc[0]))
    table = Table(title=f"Same positives as {reference}", box=box.SIMPLE_HEAD, padding=(0, 1),
                  pad_edge=False, collapse_padding=True,
                  caption=f"per GT, A: positives under {reference}, B: under the rule. GTs: "
                          "with A or B; Jaccard: mean |A n B| / |A u B|; in ref%: sum |A n B| "
                          "/ sum |B|; ref in%: sum |A n B| / sum |A|; same%: GTs with A = B")
    table.add_column("GTs by", no_wrap=True)
    for header in ("GTs", "Jaccard", "in ref%", "ref in%", "same%"):
        table.add_column(header, justify="right", no_wrap=True)
    for rule, rows in frame.groupby("rule", sort=False):
        table.add_row(f"[bold]{escape(str(rule))}[/bold]")
        for _, row in rows.iterrows():
            table.add_row(_group_label(row["group"], row["bin"]), str(int(row["gts"])),
                          _number(row["jaccard_mean"], 3),
                          _number(row["other_in_reference_pct"], 1),
                          _number(row["reference_in_other_pct"], 1),
                          _number(row["identical_pct"], 1))
        table.add_section()
    return table


def _group_label(group: str, label: str) -> str:
    return {"all": "all", "size": label}.get(group, f"w/h {label}")


def _number(value: float, decimals: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{decimals}f}"
