"""PNG plots for the sweep tables (k, anchor scale, aspect ratio): ours vs. the paper.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it works
headless and never touches the caller's matplotlib state.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from atss_bench.recipes import Recipe
from atss_bench.report.summary import TableSummary, summarize_table


def _x_positions(labels: list[str]) -> tuple[list[float], bool]:
    """Numeric sweep values (k, scale) keep their spacing; others (1:4, 1:2) are categories."""
    try:
        return [float(v) for v in labels], True
    except ValueError:
        return [float(i) for i in range(len(labels))], False


def plot_summary(summary: TableSummary, path: Path) -> Path:
    """Write the sweep plot of the first layout metric.

    Outside the paper's setting (profile other than ``full``) our values get their own y axis:
    the trend is what compares, not the level.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    recipe, summaries, profile = summary.recipe, summary.rows, summary.profile
    comparable = profile == "full"
    sweep = recipe.layout.sweep or "row"
    metric = recipe.layout.metrics[0]
    labels = [s.row.values.get(sweep, s.row.label) for s in summaries]
    xs, numeric = _x_positions(labels)
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    stats = [(x, s.metrics[metric]) for x, s in zip(xs, summaries, strict=True)]
    paper = [(x, st.paper) for x, st in stats if st.paper is not None]
    if paper:
        ax.plot([x for x, _ in paper], [p for _, p in paper], "o--", color="0.45",
                label=f"paper ({metric})")
    ours = [(x, st.mean, st) for x, st in stats if st.mean is not None]
    comparable = comparable or not ours
    ours_ax = ax if comparable else ax.twinx()
    if ours:
        ours_ax.errorbar([x for x, _, _ in ours], [mean for _, mean, _ in ours],
                         yerr=[st.std or 0.0 for _, _, st in ours], fmt="s-", color="tab:blue",
                         capsize=4, label=f"ours, {profile} (mean ± std)")
        for x, mean, st in ours:
            ours_ax.annotate(f"n={st.n}", (x, mean), textcoords="offset points", xytext=(0, 8),
                             ha="center", fontsize=7, color="tab:blue")
    if not comparable:
        ours_ax.set_ylabel(f"ours {metric} ({profile}, own scale)", color="tab:blue")
    ax.set_xticks(xs, labels)
    ax.set_xlabel(sweep if numeric or sweep != "row" else "")
    ax.set_ylabel(f"{metric} (%)" if comparable else f"paper {metric} (%)")
    ax.set_title(f"Table {recipe.table}: {metric} vs. {sweep}", fontsize=10)
    ax.grid(alpha=0.3)
    handles = [h for a in {id(ax): ax, id(ours_ax): ours_ax}.values()
               for h in a.get_legend_handles_labels()[0]]
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_sweep(recipe: Recipe, results_df: pd.DataFrame, profile: str, seeds: int | None,
               path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> Path:
    """PNG of ours (mean ± std error bars) vs. the paper along the recipe's sweep axis."""
    summary = summarize_table(recipe, results_df, profile, seeds, overrides)
    return plot_summary(summary, Path(path))
