"""Reports: the store's results drawn in the paper's table shapes (+ PNG plots for sweeps).

``render_table(recipe, results_df, profile, seeds)`` -> Markdown of one table;
``plot_sweep(recipe, results_df, profile, seeds, path)`` -> PNG; ``build_report`` does several
tables at once, as Markdown (linking their plots), LaTeX (``report.latex``) or CSV
(``report.csv_table``), with loss curves (``report.curves``) on request. No CLI or console code
here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from atss_bench.recipes import BUILTIN_RECIPES, Recipe, list_recipes
from atss_bench.report.csv_table import render_csv
from atss_bench.report.curves import plot_curves, table_curves
from atss_bench.report.latex import comment_line, render_latex
from atss_bench.report.markdown import render_summary, render_table
from atss_bench.report.plot import plot_summary, plot_sweep
from atss_bench.report.summary import MetricStat, RowSummary, TableSummary, summarize_table

__all__ = [
    "FORMATS", "MetricStat", "Report", "RowSummary", "TableSummary", "build_report",
    "paper_table_recipes", "plot_sweep", "render_table", "summarize_table",
]
FORMATS = ("markdown", "latex", "csv")


def paper_table_recipes(directory: Path = BUILTIN_RECIPES) -> list[Path]:
    """The paper's tables (``table<N>.yaml``) in table order; other recipes (ci.yaml) are not."""
    paths = [p for p in list_recipes(directory)
             if p.stem.startswith("table") and p.stem[5:].isdigit()]
    return sorted(paths, key=lambda p: int(p.stem[5:]))


@dataclass
class Report:
    text: str  # in the format asked for (Markdown by default)
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a table without loss curves, and why

    @property
    def markdown(self) -> str:
        return self.text


def build_report(
    recipes: Sequence[Recipe],
    results_df: pd.DataFrame,
    profile: str = "full",
    seeds: int | None = None,
    plot_dir: str | Path | None = None,
    link_base: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    fmt: str = "markdown",
    curves_from: str | Path | None = None,
) -> Report:
    """Markdown for every recipe; sweeps also get ``plot_dir/table<N>_<profile>.png``, linked
    relative to ``link_base`` (the Markdown file's folder) when given.

    A table whose runs were made on several datasets (``dataset`` column) is drawn once per
    dataset, each titled with it (plots ``table<N>_<profile>_<fingerprint>.png``): numbers of
    different datasets are never averaged or compared in one table.

    ``fmt`` ``latex`` or ``csv``: the same tables in that format (no sweep plots).
    ``curves_from`` (the results folder of the runs): each table also gets its rows' training
    loss, ``plot_dir/table<N>_<profile>[_<fingerprint>]_loss.png`` (linked from Markdown); a table
    none of whose runs logged a loss gets a note instead."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}")
    parts, plots, notes, summaries = [], [], [], []
    for recipe in recipes:
        for summary, suffix in _summaries_per_dataset(recipe, results_df, profile, seeds,
                                                      overrides):
            summaries.append(summary)
            text = render_summary(summary) if fmt == "markdown" else render_latex(summary)
            stem = f"table{recipe.table}_{summary.profile}{suffix}"
            if fmt == "markdown" and recipe.layout.sweep and plot_dir is not None:
                path = plot_summary(summary, Path(plot_dir) / f"{stem}.png")
                plots.append(path)
                text += _link(f"Table {recipe.table}: ours vs. the paper", path, link_base)
            if curves_from is not None and plot_dir is not None:
                rows = table_curves(summary, Path(curves_from))
                if rows:
                    path = plot_curves(summary, rows, Path(plot_dir) / f"{stem}_loss.png")
                    plots.append(path)
                    text += _link(f"Table {recipe.table}: training loss", path, link_base, fmt)
                else:
                    note = (f"Table {recipe.table} ({summary.profile}): no loss curves, no run "
                            "of it has logged a training loss yet")
                    notes.append(note)
                    text += f"\n{note}.\n" if fmt == "markdown" else comment_line(note) + "\n"
            parts.append(text)
    if fmt == "csv":
        return Report(render_csv(summaries), plots, notes)
    return Report("\n".join(parts), plots, notes)


def _link(title: str, path: Path, link_base: str | Path | None, fmt: str = "markdown") -> str:
    """A Markdown image link (a LaTeX comment naming the file), relative to ``link_base``."""
    link = os.path.relpath(path, link_base) if link_base is not None else str(path)
    if fmt == "latex":
        return comment_line(f"{title}: {link}") + "\n"
    return f"\n![{title}]({link})\n"


def _summaries_per_dataset(recipe: Recipe, results_df: pd.DataFrame, profile: str,
                           seeds: int | None, overrides: Mapping[str, Any] | None
                           ) -> list[tuple[TableSummary, str]]:
    """One summary, or one per dataset when the table's runs span several (with a plot-name
    suffix); runs that record no dataset form their own table then."""
    summary = summarize_table(recipe, results_df, profile, seeds, overrides)
    records = [r for row in summary.rows for r in (*row.done, *row.others)
               if r.get("status") != "not run"]
    known = {r["dataset"]: r.get("dataset_name") for r in records if r.get("dataset")}
    if len(known) <= 1:
        return [(summary, "")]
    column = results_df["dataset"].astype("string")
    out = []
    for fingerprint in sorted(known, key=lambda f: (str(known[f]), f)):
        part = summarize_table(recipe, results_df[(column == fingerprint).fillna(False)
                                                  .to_numpy(bool)],
                               profile, seeds, overrides)
        part.dataset = f"{known[fingerprint] or '?'}, fingerprint {fingerprint}"
        out.append((part, f"_{fingerprint[:8]}"))
    if any(not r.get("dataset") for r in records):
        part = summarize_table(recipe, results_df[column.isna().to_numpy(bool)], profile, seeds,
                               overrides)
        part.dataset = "not recorded (runs from before dataset fingerprints)"
        out.append((part, "_unrecorded"))
    return out
