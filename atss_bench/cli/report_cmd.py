"""`atss-bench report`: the paper's tables with our numbers (Markdown, + PNG plots for sweeps)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from atss_bench.cli.app import app, err_console
from atss_bench.cli.recipes_cmd import parse_sets
from atss_bench.errors import ConfigError
from atss_bench.recipes import BUILTIN_RECIPES, Recipe, load_recipe
from atss_bench.report import FORMATS, build_report, paper_table_recipes
from atss_bench.report.claims import PAPER_CLAIMS, evaluate_claims, load_claims, render_claims
from atss_bench.report.reference import build_reference_report, check_reference_dir
from atss_bench.store import printable, resolve_results_dir, scan_results, select_dataset

if TYPE_CHECKING:
    import pandas as pd

RESULTS_HELP = "Results folder (default: $ATSS_BENCH_RESULTS, else ./results)."


def select_recipes(recipe: Path | None, table: str | None, all_tables: bool) -> list[Recipe]:
    """Exactly one of RECIPE, --table N (recipes/tableN.yaml, shipped) or --all (Tables 1-9)."""
    if sum((recipe is not None, table is not None, all_tables)) != 1:
        raise ConfigError("give exactly one of RECIPE, --table N, --all or --claims",
                          hint="e.g. atss-bench report --table 2 --profile mini")
    if all_tables:
        return [load_recipe(path) for path in paper_table_recipes()]
    if table is not None:
        path = BUILTIN_RECIPES / f"table{table}.yaml"
        if not path.is_file():
            known = ", ".join(p.stem.removeprefix("table") for p in paper_table_recipes())
            raise ConfigError(f"no shipped recipe for table '{table}' ({path} not found)",
                              hint=f"tables: {known}; or pass a recipe file")
        return [load_recipe(path)]
    assert recipe is not None
    return [load_recipe(recipe)]


@app.command("report")
def report_command(
    recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML (or use --table / --all)."),
    table: Optional[str] = typer.Option(None, "--table", "-t", help="Paper table number."),
    all_tables: bool = typer.Option(False, "--all", help="Every shipped table."),
    profile: str = typer.Option("full", "--profile", "-p", help="Profile name or YAML path."),
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Markdown file (default: print)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1,
                                        help="Seeds per row expected (default: all found)."),
    sets: Optional[list[str]] = typer.Option(None, "--set",
                                             help="Override the runs were made with: key=value."),
    claims: bool = typer.Option(False, "--claims",
                                help="The paper's claims instead: our difference, its 95% "
                                "Welch interval and a verdict."),
    claims_file: Path = typer.Option(PAPER_CLAIMS, "--claims-file",
                                     help="Claims to check with --claims."),
    plan: bool = typer.Option(False, "--plan", help="With --claims: the seeds each compared row "
                              "needs to resolve the paper's effect at the measured seed noise."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="Only runs made on this dataset: a fingerprint (or its first "
        "characters) or a name. Without it, a table whose runs span several datasets is drawn "
        "once per dataset."),
    reference: Optional[Path] = typer.Option(
        None, "--reference", help="A reference store (e.g. the committed results/mini): add its "
        "mean ± std over seeds beside ours and whether ours is consistent with it (99% "
        "prediction interval)."),
    fmt: str = typer.Option("markdown", "--format", "-f",
                            help="markdown, latex (booktabs tabular to \\input) or csv (one "
                            "line per row: mean, std, n per metric)."),
    curves: bool = typer.Option(False, "--curves", help="Also plot each row's training loss "
                                "vs. iteration (PNG per table, from the runs' log.jsonl)."),
) -> None:
    """Markdown tables shaped like the paper's: paper value | ours (mean ± std) | delta."""
    if claims and (recipe is not None or table is not None or all_tables or sets
                   or reference is not None):
        raise ConfigError("--claims checks the shipped tables: give no RECIPE, --table, --all, "
                          "--set or --reference with it",
                          hint="e.g. atss-bench report --claims --profile mini")
    if plan and not claims:
        raise ConfigError("--plan goes with --claims",
                          hint="e.g. atss-bench report --claims --plan --profile mini")
    _check_format(fmt, claims or reference is not None)
    recipes = None if claims else select_recipes(recipe, table, all_tables)
    results_dir = resolve_results_dir(results)
    scan = scan_results(results_dir)
    for line in scan.warnings:
        err_console.print(f"warning: {line}", highlight=False, markup=False)
    frame = select_dataset(scan.frame, dataset)
    if recipes is None:
        checked = evaluate_claims(load_claims(claims_file), frame, profile, seeds=seeds)
        _write(render_claims(checked, profile, plan=plan), out)
        return
    plot_dir = out.parent if out is not None else _plot_dir(results_dir, recipes, curves)
    report = build_report(recipes, frame, profile=profile, seeds=seeds, plot_dir=plot_dir,
                          link_base=out.parent if out is not None else None,
                          overrides=parse_sets(sets), fmt=fmt,
                          curves_from=results_dir if curves else None)
    for note in report.notes:
        err_console.print(f"note: {note}", highlight=False, markup=False)
    markdown = report.markdown
    if reference is not None:
        markdown += "\n" + _reference_report(reference, recipes, frame, profile, seeds, sets,
                                              dataset)
    _write(markdown, out)
    for plot in report.plots:
        err_console.print(f"plot: {plot}", highlight=False, markup=False)


def _reference_report(reference: Path, recipes: list[Recipe], frame: pd.DataFrame, profile: str,
                      seeds: int | None, sets: list[str] | None, dataset: str | None) -> str:
    """Ours beside the reference store's runs (``--reference``), one section per table."""
    scan = scan_results(check_reference_dir(reference))
    for line in scan.warnings:
        err_console.print(f"warning: reference: {line}", highlight=False, markup=False)
    return build_reference_report(recipes, frame, select_dataset(scan.frame, dataset),
                                  str(reference), profile=profile, seeds=seeds,
                                  overrides=parse_sets(sets))


def _writable(folder: Path) -> bool:
    """Whether ``folder`` can be written or created (its nearest existing parent decides)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK)


def _check_format(fmt: str, markdown_only: bool) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {printable(fmt, 40)!r}",
                          hint=f"one of: {', '.join(FORMATS)}")
    if markdown_only and fmt != "markdown":
        raise ConfigError("--claims and --reference write Markdown only",
                          hint="drop --format, or report the tables alone in that format")


def _plot_dir(results_dir: Path, recipes: list[Recipe], curves: bool = False) -> Path | None:
    """RESULTS/reports, or None (no plots, with a note) when the store is read-only."""
    folder = results_dir / "reports"
    if _writable(folder):
        return folder
    if curves or any(recipe.layout.sweep for recipe in recipes):
        err_console.print(f"note: plots not written: {folder} is read-only (write the report "
                          "and its plots elsewhere with --out FILE)", highlight=False,
                          markup=False)
    return None


def _write(markdown: str, out: Path | None) -> None:
    if out is None:
        typer.echo(markdown, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown, encoding="utf-8")
    err_console.print(f"wrote {out}", highlight=False, markup=False)
