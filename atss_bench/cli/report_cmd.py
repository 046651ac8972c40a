"""`atss-bench report`: the paper's tables with our numbers (Markdown, + PNG plots for sweeps)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from atss_bench.cli.app import app, err_console
from atss_bench.cli.recipes_cmd import parse_sets
from atss_bench.errors import ConfigError
from atss_bench.recipes import BUILTIN_RECIPES, Recipe, load_recipe
from atss_bench.report import build_report, paper_table_recipes
from atss_bench.store import resolve_results_dir, scan_results

RESULTS_HELP = "Results folder (default: $ATSS_BENCH_RESULTS, else ./results)."


def select_recipes(recipe: Path | None, table: str | None, all_tables: bool) -> list[Recipe]:
    """Exactly one of RECIPE, --table N (recipes/tableN.yaml, shipped) or --all (Tables 1-8)."""
    if sum((recipe is not None, table is not None, all_tables)) != 1:
        raise ConfigError("give exactly one of RECIPE, --table N or --all",
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
) -> None:
    """Markdown tables shaped like the paper's: paper value | ours (mean ± std) | delta."""
    recipes = select_recipes(recipe, table, all_tables)
    results_dir = resolve_results_dir(results)
    scan = scan_results(results_dir)
    for line in scan.warnings:
        err_console.print(f"warning: {line}", highlight=False, markup=False)
    plot_dir = out.parent if out is not None else results_dir / "reports"
    report = build_report(recipes, scan.frame, profile=profile, seeds=seeds, plot_dir=plot_dir,
                          link_base=out.parent if out is not None else None,
                          overrides=parse_sets(sets))
    if out is None:
        typer.echo(report.markdown, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.markdown, encoding="utf-8")
        err_console.print(f"wrote {out}", highlight=False, markup=False)
    for plot in report.plots:
        err_console.print(f"plot: {plot}", highlight=False, markup=False)
