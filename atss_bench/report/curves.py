"""Training-loss curves of a table's rows, read from the runs' ``log.jsonl`` (``report --curves``).

Per row, every run of its seeds that logged a loss (done, failed, running, ...): the mean over
the runs that logged each iteration as a line, their min-max as a band. A run that stopped
without finishing (failed, timed-out, cancelled) is drawn to its last logged iteration and marked
there with an ``x``: a diverging row (no GN) shows where it gave up.

Logs are read as untrusted data: reached without following symlinks (``job.safeio``), at most
the last ``MAX_LOG_BYTES``, malformed lines and non-finite or non-numeric values skipped.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from atss_bench.job import rundir as rd
from atss_bench.job.safeio import read_tail_confined
from atss_bench.report.summary import RowSummary, TableSummary

MAX_LOG_BYTES = 16 << 20  # a 90k-iteration run logging every 20 iterations: ~2 MiB
STOPPED = ("failed", "timed-out", "cancelled")
LABEL_CHARS = 40
LOG_SPAN = 10.0  # losses spanning a decade or more (a divergence) get a log axis


@dataclass
class RunCurve:
    run_id: str
    status: str
    points: list[tuple[int, float]]  # (iteration, loss), iterations increasing


@dataclass
class RowCurves:
    label: str
    runs: list[RunCurve] = field(default_factory=list)

    def band(self) -> list[tuple[int, float, float, float]]:
        """(iteration, mean, min, max) over the runs that logged each iteration."""
        by_iter: dict[int, list[float]] = {}
        for run in self.runs:
            for iteration, loss in run.points:
                by_iter.setdefault(iteration, []).append(loss)
        return [(i, statistics.fmean(v), min(v), max(v)) for i, v in sorted(by_iter.items())]


def read_loss_points(results_dir: Path, run_id: str) -> list[tuple[int, float]]:
    """(iteration, loss) of every well-formed training line of a run's log.jsonl (the last
    value of an iteration logged twice wins)."""
    data = read_tail_confined(results_dir, [rd.RUNS, run_id, rd.LOG], MAX_LOG_BYTES)
    if not data:
        return []
    lines = data.splitlines()
    if len(data) >= MAX_LOG_BYTES:
        lines = lines[1:]  # the first line may be cut
    points: dict[int, float] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(record, dict):
            continue
        iteration, loss = record.get("iter"), record.get("loss")
        if type(iteration) is int and iteration >= 0 and type(loss) in (int, float) \
                and math.isfinite(loss):
            points[iteration] = float(loss)
    return sorted(points.items())


def row_curves(summary: RowSummary, results_dir: Path) -> RowCurves:
    """The logged losses of a row's runs (runs without a log line are left out)."""
    curves = RowCurves(summary.row.label)
    for record in (*summary.done, *summary.others):
        if record.get("status") == "not run":
            continue
        points = read_loss_points(results_dir, str(record["run_id"]))
        if points:
            curves.runs.append(RunCurve(str(record["run_id"]), str(record["status"]), points))
    return curves


def table_curves(summary: TableSummary, results_dir: Path) -> list[RowCurves]:
    """Rows of ``summary`` that have at least one logged loss, in table order."""
    rows = [row_curves(s, results_dir) for s in summary.rows]
    return [r for r in rows if r.runs]


def _legend_label(curves: RowCurves) -> str:
    label = " ".join(curves.label.split())
    label = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
    label = label.replace("$", r"\$")  # no mathtext from a recipe's text
    stopped = [r for r in curves.runs if r.status in STOPPED]
    runs = f"n={len(curves.runs)}" + (f", {len(stopped)} stopped" if stopped else "")
    return f"{label} ({runs})"


def plot_curves(summary: TableSummary, rows: list[RowCurves], path: Path) -> Path:
    """PNG: loss vs. iteration, one line (mean) + band (min-max) per row; ``x`` where a
    stopped run ended. A log axis when the losses span LOG_SPAN or more."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = [f"C{i % 10}" for i in range(len(rows))]
    for curves, color in zip(rows, colors, strict=True):
        band = curves.band()
        xs = [b[0] for b in band]
        ax.plot(xs, [b[1] for b in band], "-", color=color, lw=1.4,
                label=_legend_label(curves))
        if any(b[2] != b[3] for b in band):
            ax.fill_between(xs, [b[2] for b in band], [b[3] for b in band], color=color,
                            alpha=0.2, lw=0)
        for run in curves.runs:
            if run.status in STOPPED:
                x, y = run.points[-1]
                ax.plot([x], [y], "x", color=color, ms=8, mew=2)
    lows = [b[2] for r in rows for b in r.band()]
    highs = [b[3] for r in rows for b in r.band()]
    if min(lows) > 0 and max(highs) >= LOG_SPAN * min(lows):
        ax.set_yscale("log")
    recipe = summary.recipe
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title(f"Table {recipe.table}: training loss ({summary.profile}; mean over seeds, "
                 "band = min-max, x = stopped)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
