"""Markdown tables in the paper's shape: paper value, ours (mean ± std over n seeds), delta.

- ``checks`` layout (Table 1): one ✓ column per improvement.
- ``grid`` layout (Table 2): classification rule x regression start, one metric per cell.
- ``list`` layout: one line per row; ``layout.columns`` adds label columns from ``row.values``.
One metric: separate ``paper | ours | Δ`` columns; several (AP..APl): one ``paper → ours (Δ)``
cell per metric. A row without a finished run says why: pending, running i/n, failed (reason),
not run; never a blank or a zero.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import pandas as pd

from atss_bench.recipes import Recipe
from atss_bench.report.summary import (
    STATE_PRIORITY,
    MetricStat,
    RowSummary,
    TableSummary,
    summarize_table,
)

REASON_CHARS = 48
METRIC_HEADERS = {"APs": "APS", "APm": "APM", "APl": "APL"}  # the paper's spelling
PAPER = "Zhang et al., CVPR 2020"


def _num(value: float) -> str:
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _delta(value: float | None) -> str:
    if value is None:
        return "–"
    text = f"{value:+.1f}"
    return "+0.0" if text == "-0.0" else text


def mean_std_text(stat: MetricStat) -> str:
    """``m ± s`` (``m`` for one seed, ``–`` for none), one decimal."""
    if stat.mean is None:
        return "–"
    return _num(stat.mean) if stat.std is None else f"{_num(stat.mean)} ± {_num(stat.std)}"


def _abbrev(text: str, limit: int = REASON_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _state_text(record: dict[str, Any]) -> str:
    """A short word for one unfinished run: ``running 450/1200``, ``failed: reason``, ..."""
    state = record["status"]
    if state == "running" and record.get("iter") is not None and record.get("max_iter"):
        return f"running {int(record['iter'])}/{int(record['max_iter'])}"
    if state in ("failed", "timed-out", "cancelled") and record.get("reason"):
        return f"{state}: {_abbrev(record['reason'])}"
    return state


def _row_state(summary: RowSummary) -> str:
    """Cell text for a row without a value: its most telling state, without the reason; ``n/a``
    when runs finished but the metric is undefined (COCOeval's -1: no objects of that size)."""
    if summary.done:
        return "n/a"
    state = summary.state
    for record in summary.others:
        if record["status"] == state:
            return _state_text(record).split(":")[0]
    return state


def runs_text(summary: RowSummary) -> str:
    """``n=3``, ``n=2/3; 1 failed: reason``, ``pending``, ``not run``..."""
    parts = []
    if summary.done:
        expected = f"/{summary.expected}" if summary.expected else ""
        parts.append(f"n={summary.n}{expected}")
    by_state: dict[str, list[dict[str, Any]]] = {}
    for record in summary.others:
        by_state.setdefault(record["status"], []).append(record)
    counted = summary.n + len(summary.others) > 1
    for state in sorted(by_state, key=lambda s: STATE_PRIORITY.index(s)
                        if s in STATE_PRIORITY else len(STATE_PRIORITY)):
        records = by_state[state]
        parts.append((f"{len(records)} " if counted else "") + _state_text(records[0]))
    return "; ".join(parts)


def metric_cell(stat: MetricStat, summary: RowSummary) -> str:
    """``paper → ours (Δ)``; with no finished run ``paper → pending`` (or running, failed, ...)."""
    paper = _num(stat.paper) if stat.paper is not None else "n/a"
    if stat.mean is None:
        return f"{paper} → {_row_state(summary)}"
    delta = f" ({_delta(stat.delta)})" if stat.delta is not None else ""
    return f"{paper} → {mean_std_text(stat)}{delta}"


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                   center: Sequence[int] = ()) -> str:
    """A padded GitHub-flavoured Markdown table."""
    cells = [[_escape(c) for c in header]] + [[_escape(c) for c in row] for row in rows]
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in cells]
    rule = [(":" + "-" * (w - 2) + ":") if i in center else "-" * w for i, w in enumerate(widths)]
    lines.insert(1, "| " + " | ".join(rule) + " |")
    return "\n".join(lines)


def _metric_header(metric: str) -> str:
    return METRIC_HEADERS.get(metric, metric)


def _list_table(recipe: Recipe, summaries: list[RowSummary]) -> tuple[str, str]:
    layout = recipe.layout
    label = [] if layout.sweep else ["Method"]
    header = label + list(layout.columns) + list(layout.checks)
    center = range(len(label) + len(layout.columns), len(header))
    single = len(layout.metrics) == 1
    if single:
        m = _metric_header(layout.metrics[0])
        header += [f"{m} paper", f"{m} ours", "Δ"]
    else:
        header += [_metric_header(m) for m in layout.metrics]
    header.append("runs")
    rows = []
    for s in summaries:
        cells = ([s.row.label] if label else []) + [s.row.values.get(c, "") for c in layout.columns]
        cells += ["✓" if c in s.row.checks else "" for c in layout.checks]
        if single:
            stat = s.metrics[layout.metrics[0]]
            ours = mean_std_text(stat) if stat.mean is not None else _row_state(s)
            paper = _num(stat.paper) if stat.paper is not None else "n/a"
            cells += [paper, ours, _delta(stat.delta)]
        else:
            cells += [metric_cell(s.metrics[m], s) for m in layout.metrics]
        rows.append(cells + [runs_text(s)])
    legend = ("ours = mean ± std over the n finished seeds (runs column); Δ = ours − paper."
              if single else
              "Each cell: paper → ours (Δ = ours − paper); ours = mean ± std over the n finished"
              " seeds (runs column).")
    return markdown_table(header, rows, center=list(center)), legend


def _grid_table(recipe: Recipe, summaries: list[RowSummary]) -> tuple[str, str]:
    layout = recipe.layout
    metric = layout.metrics[0]
    by_cell: dict[tuple[str, ...], RowSummary] = {}
    for row_summary in summaries:
        by_cell.setdefault(tuple(row_summary.row.cell or ()), row_summary)
    header = [""] + [axis.label for axis in layout.grid_columns]
    rows = []
    for axis in layout.grid_rows:
        cells = [axis.label]
        for col in layout.grid_columns:
            summary: RowSummary | None = by_cell.get((axis.key, col.key))
            if summary is None:
                cells.append("–")
                continue
            stat = summary.metrics[metric]
            paper = _num(stat.paper) if stat.paper is not None else "n/a"
            cells.append(f"{metric_cell(stat, summary)}, {runs_text(summary)}" if summary.done
                         else f"{paper} → {runs_text(summary)}")
        rows.append(cells)
    legend = (f"Each cell: {metric} paper → ours (Δ = ours − paper); ours = mean ± std over the n"
              " finished seeds.")
    return markdown_table(header, rows), legend


def profile_note(profile: str, data_kind: str | None = None) -> str:
    if profile == "full":
        return "Profile `full`: the paper's setting (COCO train2017 → val2017)."
    if data_kind == "mini":
        return (f"Profile `{profile}`: **mini-COCO, CPU scale: not comparable to the paper's"
                " absolute numbers**; compare rows with each other (trends, signs of Δ).")
    return (f"Profile `{profile}`: not the paper's setting; absolute numbers are not comparable"
            " to the paper's.")


def _count_text(counter: Counter) -> str:
    """``cpu`` when uniform, else ``cuda (6), cpu (2)``."""
    if len(counter) == 1:
        return str(next(iter(counter)))
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} ({v})" for k, v in ranked)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def provenance_note(summaries: list[RowSummary]) -> str:
    """Where the numbers come from: runs, commits (a run resumed from checkpoints that other
    code trained is marked "(resumed across commits)"), devices, world sizes, compute."""
    done = [r for s in summaries for r in s.done]
    missing = sum(len(s.others) for s in summaries)
    head = f"Provenance: paper = {PAPER}; ours = {_plural(len(done), 'finished run')}"
    head += f" ({missing} more unfinished or not run)." if missing else "."
    if not done:
        return head
    commits = Counter((r.get("git_commit") or "unknown")[:7]
                      + ("-dirty" if r.get("git_dirty") else "")
                      + (" (resumed across commits)" if r.get("mixed_code") else "")
                      for r in done)
    devices = Counter(str(r.get("device") or "unknown") for r in done)
    worlds = Counter(str(r.get("world_size") or "?") for r in done)
    seconds = sum(float(r.get("wall_time") or 0.0) for r in done)
    datasets = Counter(f"{r.get('dataset_name') or '?'} ({r['dataset']})"
                       for r in done if r.get("dataset"))
    data = f" Dataset: {_count_text(datasets)}." if datasets else ""
    return (f"{head} Commit: {_count_text(commits)}. Device: {_count_text(devices)}. "
            f"World size: {_count_text(worlds)}. Wall time: {_duration(seconds)} in total.{data}")


def table_title(summary: TableSummary) -> str:
    """``Table <N>: <title>``, with the dataset when the store holds several."""
    title = f"Table {summary.recipe.table}: {summary.recipe.title}"
    return title if summary.dataset is None else f"{title} (dataset {summary.dataset})"


def render_summary(summary: TableSummary) -> str:
    recipe = summary.recipe
    draw = _grid_table if recipe.layout.kind == "grid" else _list_table
    table, legend = draw(recipe, summary.rows)
    parts = [f"## {table_title(summary)}",
             profile_note(summary.profile, summary.data_kind), table, legend,
             provenance_note(summary.rows)]
    return "\n\n".join(parts) + "\n"


def render_table(recipe: Recipe, results_df: pd.DataFrame, profile: str = "full",
                 seeds: int | None = None, *, overrides: Mapping[str, Any] | None = None) -> str:
    """One paper table as Markdown, from the store's DataFrame (``store.load_results``)."""
    return render_summary(summarize_table(recipe, results_df, profile, seeds, overrides))
