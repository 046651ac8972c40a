"""`atss-bench recipes` and `atss-bench show`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.table import Table

from atss_bench.cli.app import app, console
from atss_bench.overrides import flatten, parse_set_option
from atss_bench.recipes import BUILTIN_RECIPES, Experiment, list_recipes, load_recipe


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    return dict(parse_set_option(item) for item in items or [])


def split_rows(rows: str | None) -> list[str] | None:
    return [r.strip() for r in rows.split(",") if r.strip()] if rows else None


@app.command("recipes")
def recipes_command(
    directory: Path = typer.Option(BUILTIN_RECIPES, "--dir", help="Folder of recipe YAMLs."),
) -> None:
    """List the recipes: file, table, title and rows."""
    table = Table("file", "table", "title", "rows")
    for path in list_recipes(directory):
        recipe = load_recipe(path)
        table.add_row(path.name, str(recipe.table), recipe.title,
                      f"{len(recipe.rows)}: " + ", ".join(r.id for r in recipe.rows))
    console.print(table)


def varying_keys(experiments: list[Experiment]) -> list[str]:
    """Dotted config keys whose values differ between the experiments (what the table varies)."""
    flat = [flatten(e.config.model_dump(mode="json")) for e in experiments]
    keys = sorted({k for f in flat for k in f})
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1 and k != "seed"]


def _paper_text(paper: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.1f}" for k, v in paper.items()) or "-"


@app.command("show")
def show_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/table2.yaml."),
    profile: str = typer.Option("full", "--profile", "-p", help="Profile name or YAML path."),
    row: Optional[str] = typer.Option(None, "--row", help="Row id(s), comma separated."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per row."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="Override: key=value."),
    fmt: str = typer.Option("table", "--format", help="table | yaml"),
) -> None:
    """Show each row's resolved config, run id and the paper's metrics."""
    if fmt not in ("table", "yaml"):
        raise typer.BadParameter("must be 'table' or 'yaml'", param_hint="--format")
    loaded = load_recipe(recipe)
    experiments = loaded.experiments(profile=profile, seeds=seeds, rows=split_rows(row),
                                     overrides=parse_sets(sets))
    if fmt == "yaml":
        for exp in experiments:
            console.print(f"# table {exp.table} row {exp.row_id} ({exp.label}) seed {exp.seed}"
                          f" run_id {exp.run_id} profile {exp.profile} paper: {_paper_text(exp.paper)}",
                          markup=False, highlight=False)
            console.print(yaml.safe_dump(exp.config.model_dump(mode="json"), sort_keys=False),
                          markup=False, highlight=False)
        return
    keys = varying_keys(experiments)
    table = Table(title=f"Table {loaded.table}: {loaded.title} [profile {profile}]")
    table.add_column("row", max_width=24)
    table.add_column("run_id", no_wrap=True)
    table.add_column("seed", no_wrap=True)
    table.add_column("differs between rows", min_width=30)
    table.add_column("paper", max_width=12)
    for exp in experiments:
        flat = flatten(exp.config.model_dump(mode="json"))
        knobs = "\n".join(f"{k.removeprefix('model.')}={flat[k]}" for k in keys
                          if flat.get(k) is not None)
        table.add_row(f"{exp.row_id}\n{exp.label}", exp.run_id, str(exp.seed), knobs or "-",
                      _paper_text(exp.paper))
    console.print(table)
    if loaded.layout.kind == "grid":
        console.print(_grid(loaded, experiments))


def _grid(recipe, experiments: list[Experiment]) -> Table:
    metric = recipe.layout.metrics[0]
    grid = Table(title=f"paper {metric} (run id)")
    grid.add_column("")
    for col in recipe.layout.grid_columns:
        grid.add_column(col.label)
    by_cell = {recipe.row(e.row_id).cell: e for e in experiments if e.seed == experiments[0].seed}
    for axis in recipe.layout.grid_rows:
        cells = []
        for col in recipe.layout.grid_columns:
            exp = by_cell.get((axis.key, col.key))
            cells.append(f"{exp.paper.get(metric, float('nan')):.1f} ({exp.run_id})" if exp else "-")
        grid.add_row(axis.label, *cells)
    return grid
