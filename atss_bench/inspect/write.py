"""The statistics as Markdown (for people) and CSV (for pandas), and their number formats."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

COLUMN_TITLES = {
    "rule": "rule", "group": "group", "bin": "bin", "gts": "GTs", "positives": "positives",
    "pos_per_gt_mean": "pos/GT mean", "pos_per_gt_median": "median", "pos_per_gt_p10": "p10",
    "zero_pos_pct": "0 pos %", "mean_iou": "IoU",
}


def column_title(column: str) -> str:
    """Printed name of a statistics column (``P3_pct`` -> ``P3 %``)."""
    return COLUMN_TITLES.get(column, column.replace("_pct", " %"))


def format_value(column: str, value: object) -> str:
    """Counts as integers, IoU with 3 decimals, percentages with 1, means with 2; NaN -> '-'."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("gts", "positives"):
        return str(int(value))
    if column == "mean_iou":
        return f"{value:.3f}"
    if column.endswith("_pct"):
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_markdown(frame: pd.DataFrame, title: str, notes: Sequence[str] = ()) -> str:
    """A heading, one bullet per note, and the table."""
    columns = list(frame.columns)
    lines = [f"# {title}", ""]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    lines.append("| " + " | ".join(column_title(c) for c in columns) + " |")
    lines.append("|" + "|".join("---" if c in ("rule", "group", "bin") else "---:"
                               for c in columns) + "|")
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(format_value(c, row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_tables(frame: pd.DataFrame, markdown: str, stem: Path) -> tuple[Path, Path]:
    """``<stem>.md`` and ``<stem>.csv`` (full precision); returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = Path(f"{stem}.md"), Path(f"{stem}.csv")
    md_path.write_text(markdown)
    frame.to_csv(csv_path, index=False)
    return md_path, csv_path
