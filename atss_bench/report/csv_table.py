"""CSV of the paper's tables: one line per recipe row, seed statistics per metric.

Columns: ``table, profile, dataset, row_id, label, state, n`` then, for each metric of the
table's layout, ``<M>_paper, <M>_mean, <M>_std, <M>_n, <M>_delta``. ``mean`` and ``std`` (sample
std, n - 1) are over the finished seeds; ``std`` is empty for one seed, every statistic for
none. Numbers are rounded to 4 decimals; tables of different metric sets share one header (the
union of their columns, in order of first use). A text cell that a spreadsheet would run as a
formula (``=``, ``+``, ``-``, ``@`` first) is prefixed with ``'``.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Sequence

from atss_bench.report.summary import MetricStat, TableSummary

BASE_COLUMNS = ("table", "profile", "dataset", "row_id", "label", "state", "n")
STAT_FIELDS = ("paper", "mean", "std", "n", "delta")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _number(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    text = repr(round(float(value), 4))
    return "0.0" if text == "-0.0" else text


def _text(value: Any) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return "'" + text if text.startswith(_FORMULA_START) else text


def _stats(metric: str, stat: MetricStat) -> dict[str, str]:
    values = {"paper": stat.paper, "mean": stat.mean, "std": stat.std,
              "n": stat.n if stat.mean is not None else None, "delta": stat.delta}
    return {f"{metric}_{name}": _number(values[name]) for name in STAT_FIELDS}


def table_rows(summary: TableSummary) -> list[dict[str, str]]:
    """One dict (column -> cell text) per recipe row of ``summary``."""
    rows = []
    for s in summary.rows:
        row = {"table": _text(summary.recipe.table), "profile": _text(summary.profile),
               "dataset": _text(summary.dataset), "row_id": _text(s.row.id),
               "label": _text(s.row.label), "state": s.state, "n": str(s.n)}
        for metric in summary.recipe.layout.metrics:
            row.update(_stats(metric, s.metrics[metric]))
        rows.append(row)
    return rows


def render_csv(summaries: Sequence[TableSummary]) -> str:
    """Every table's rows under one header (``\\n`` line ends)."""
    columns = list(BASE_COLUMNS)
    for summary in summaries:
        for metric in summary.recipe.layout.metrics:
            columns += [c for c in (f"{metric}_{f}" for f in STAT_FIELDS) if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for summary in summaries:
        writer.writerows(table_rows(summary))
    return buffer.getvalue()
