"""`atss-bench diff A B`: which config keys, dataset, code and metrics differ between two runs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from atss_bench.cli.app import app, console
from atss_bench.cli.report_cmd import RESULTS_HELP
from atss_bench.store import resolve_results_dir
from atss_bench.store.diff import diff_runs, render_diff


@app.command("diff")
def diff_command(
    a: str = typer.Argument(..., help="A run id (or a unique prefix), or RECIPE.yaml:ROW."),
    b: str = typer.Argument(..., help="Another run id, or RECIPE.yaml:ROW."),
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    profile: str = typer.Option("full", "--profile", "-p",
                                help="Profile that resolves a RECIPE.yaml:ROW side."),
) -> None:
    """Config keys that differ, dataset and code provenance, metrics side by side (B - A)."""
    diff = diff_runs(a, b, resolve_results_dir(results), profile)
    for line in render_diff(diff):
        console.print(line, markup=False, highlight=False)
