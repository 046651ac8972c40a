"""LaTeX tables a paper can ``\\input``: booktabs rules, the paper's shape, our numbers.

One ``tabular`` per table (no float: the paper's own ``table`` environment gives the caption),
preceded by ``%`` comment lines that say what it is (title, profile, what a cell means). Needs
``\\usepackage{booktabs}`` (and ``amssymb`` for the ✓ of Table 1's ``checks`` layout).

- one metric (``list``/``checks`` layouts): ``Paper & Ours & $\\Delta$`` columns;
- several metrics: one column per metric, each cell ``ours $\\pm$ std (paper)``;
- ``grid`` (Table 2): classification rule x regression start, each cell ``ours $\\pm$ std
  (paper)``.
A row without a finished run shows its state (``pending``, ``failed``, ...) in italics; ``--``
where nothing is known. Every text that comes from a recipe or a record is escaped.
"""
from __future__ import annotations

import re
from typing import Sequence

from atss_bench.recipes import Recipe
from atss_bench.report.markdown import METRIC_HEADERS, _delta, _num, _row_state, table_title
from atss_bench.report.summary import MetricStat, RowSummary, TableSummary

_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
}
_UNICODE = {"✓": r"\checkmark{}", "±": r"$\pm$", "Δ": r"$\Delta$", "→": r"$\rightarrow$",
            "×": r"$\times$", "−": "-", "–": "--", "—": "---", "…": r"\ldots{}"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_METRIC_TEX = {"AP50": "AP$_{50}$", "AP75": "AP$_{75}$", "APs": "AP$_S$", "APm": "AP$_M$",
               "APl": "AP$_L$"}


def escape_latex(text: str) -> str:
    """``text`` as literal LaTeX text: specials escaped, line breaks and control characters
    turned into spaces, a few Unicode signs spelled as LaTeX commands."""
    text = " ".join(_CONTROL.sub(" ", str(text)).split())
    return "".join(_SPECIALS.get(c) or _UNICODE.get(c) or c for c in text)


def comment_line(text: str) -> str:
    """One ``%`` comment line (nothing in it can end the comment)."""
    return "% " + " ".join(_CONTROL.sub(" ", str(text)).split())


def _metric_header(metric: str) -> str:
    return _METRIC_TEX.get(metric) or escape_latex(METRIC_HEADERS.get(metric, metric))


def _ours(stat: MetricStat) -> str:
    """``36.2 $\\pm$ 1.0`` (``36.2`` for one seed)."""
    assert stat.mean is not None
    return _num(stat.mean) if stat.std is None else f"{_num(stat.mean)} $\\pm$ {_num(stat.std)}"


def _state(summary: RowSummary) -> str:
    return f"\\textit{{{escape_latex(_row_state(summary))}}}"


def _cell(stat: MetricStat, summary: RowSummary) -> str:
    """``ours $\\pm$ std (paper)``, or the row's state (with the paper value)."""
    paper = f" ({_num(stat.paper)})" if stat.paper is not None else ""
    if stat.mean is None:
        return _state(summary) + paper
    return _ours(stat) + paper


def tabular(columns: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A booktabs ``tabular``; cells are LaTeX already."""
    lines = [f"\\begin{{tabular}}{{{columns}}}", "\\toprule", " & ".join(header) + " \\\\",
             "\\midrule"]
    lines += [" & ".join(row) + " \\\\" for row in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


def _list_table(recipe: Recipe, summaries: list[RowSummary]) -> tuple[str, str]:
    layout = recipe.layout
    label = [] if layout.sweep else ["Method"]
    header = [escape_latex(h) for h in label + list(layout.columns) + list(layout.checks)]
    align = "l" * len(label) + "c" * (len(layout.columns) + len(layout.checks))
    single = len(layout.metrics) == 1
    if single:
        header += ["Paper", "Ours", "$\\Delta$"]
        align += "rrr"
    else:
        header += [_metric_header(m) for m in layout.metrics]
        align += "r" * len(layout.metrics)
    rows = []
    for s in summaries:
        cells = [escape_latex(s.row.label)] if label else []
        cells += [escape_latex(s.row.values.get(c, "")) for c in layout.columns]
        cells += ["\\checkmark" if c in s.row.checks else "" for c in layout.checks]
        if single:
            stat = s.metrics[layout.metrics[0]]
            paper = _num(stat.paper) if stat.paper is not None else "--"
            ours = _ours(stat) if stat.mean is not None else _state(s)
            delta = _delta(stat.delta).replace("–", "--")
            cells += [paper, ours, delta]
        else:
            cells += [_cell(s.metrics[m], s) for m in layout.metrics]
        rows.append(cells)
    legend = (f"{layout.metrics[0]}: paper, ours = mean ± std over finished seeds, Δ = ours − "
              "paper" if single else "each cell: ours = mean ± std over finished seeds (paper)")
    return tabular(align, header, rows), legend


def _grid_table(recipe: Recipe, summaries: list[RowSummary]) -> tuple[str, str]:
    layout = recipe.layout
    metric = layout.metrics[0]
    by_cell = {}
    for s in summaries:
        by_cell.setdefault(tuple(s.row.cell or ()), s)
    header = [""] + [escape_latex(axis.label) for axis in layout.grid_columns]
    rows = []
    for axis in layout.grid_rows:
        cells = [escape_latex(axis.label)]
        for col in layout.grid_columns:
            summary = by_cell.get((axis.key, col.key))
            cells.append("--" if summary is None else _cell(summary.metrics[metric], summary))
        rows.append(cells)
    align = "l" + "r" * len(layout.grid_columns)
    return tabular(align, header, rows), (f"each cell: {metric} ours = mean ± std over finished"
                                          " seeds (paper)")


def render_latex(summary: TableSummary) -> str:
    """One table: comment lines (title, profile, legend), then the booktabs ``tabular``."""
    recipe = summary.recipe
    draw = _grid_table if recipe.layout.kind == "grid" else _list_table
    table, legend = draw(recipe, summary.rows)
    comments = [comment_line(table_title(summary)),
                comment_line(f"profile {summary.profile}; {legend}"),
                comment_line("needs \\usepackage{booktabs}"
                             + (" and \\usepackage{amssymb}" if recipe.layout.checks else ""))]
    return "\n".join(comments) + "\n" + table + "\n"
