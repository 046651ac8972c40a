"""`atss-bench check`: CI regression on mini-COCO against a committed baseline."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from atss_bench.check import DEFAULT_BASELINE, DEFAULT_RECIPE, run_check, update_baseline
from atss_bench.cli.app import app, console, print_error
from atss_bench.devices import use_device
from atss_bench.errors import TrainingError


CHECK_EXIT_CODES = (
    "Exit codes: 0 when every row is within tolerance (or the baseline was written); 1 when a row "
    "regressed or its run failed (--update-baseline: a baseline run failed); 2 on bad input (a "
    "missing, malformed or stale baseline, a bad recipe or flag).")


@app.command("check", epilog=CHECK_EXIT_CODES)
def check_command(
    recipe: Path = typer.Option(DEFAULT_RECIPE, "--recipe", help="The CI recipe."),
    baseline: Path = typer.Option(DEFAULT_BASELINE, "--baseline", help="Baseline JSON."),
    update: bool = typer.Option(False, "--update-baseline",
                                help="Train every row with --seeds seeds and rewrite the baseline."),
    seeds: int = typer.Option(3, "--seeds", min=2, help="Seeds per row for --update-baseline."),
    profile: str = typer.Option("mini", "--profile", help="Profile for --update-baseline."),
    results: Optional[Path] = typer.Option(
        None, "--results",
        help="Reuse the runs already done in this store (never retrained, cleared or rewritten) "
             "and train the missing ones into it (default: a private temporary store)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1,
                             help="Runs trained at once, each with an equal share of the cores."),
    device: str = typer.Option(
        "cpu", "--device",
        help="cpu, cuda or auto. The committed baseline's runs are CPU runs: CUDA (AMP) ones "
             "are only comparable with a baseline made on CUDA (--update-baseline --device cuda)."),
) -> None:
    """Train the CI recipe and compare each row's AP with the baseline; exit 1 on a regression,
    2 on an error (a missing, malformed or stale baseline: its run ids no longer match the
    recipe)."""
    use_device(device)
    if update:
        try:
            data = update_baseline(recipe, baseline, profile=profile, seeds=seeds,
                                   results_dir=results, jobs=jobs)
        except TrainingError as exc:  # a baseline run failed: a failure (1), not bad input (2)
            print_error(exc)
            raise typer.Exit(1) from None
        table = Table("row", "AP mean", "AP std", "seeds", title=f"baseline written: {baseline}")
        for row_id, row in data["rows"].items():
            table.add_row(row_id, f"{row['AP_mean']:.2f}", f"{row['AP_std']:.2f}",
                          str(len(row["AP"])))
        console.print(table)
        console.print(f"tolerance {data['tolerance_AP']:.2f} AP ({data['rule']})", highlight=False)
        return
    rows = run_check(recipe, baseline, results_dir=results, jobs=jobs)
    table = Table("row", "label", "baseline AP", "now", "delta", "tolerance", "verdict",
                  title=f"atss-bench check: {recipe} vs {baseline}")
    style = {"ok": "green", "better": "cyan", "regression": "bold red", "failed": "bold red"}
    for row in rows:
        now = "-" if row.now is None else f"{row.now:.2f}"
        delta = "-" if row.delta is None else f"{row.delta:+.2f}"
        table.add_row(row.row_id, row.label, f"{row.baseline:.2f}", now, delta,
                      f"±{row.tolerance:.2f}", f"[{style[row.verdict]}]{row.verdict}[/]")
    console.print(table)
    bad = [r for r in rows if r.verdict in ("regression", "failed")]
    for row in bad:
        if row.reason:
            console.print(f"{row.row_id}: {row.reason}", markup=False, highlight=False)
    if bad:
        console.print(f"[bold red]{len(bad)} of {len(rows)} rows regressed or failed[/]")
        raise typer.Exit(1)
    console.print(f"[green]all {len(rows)} rows within tolerance[/]")
