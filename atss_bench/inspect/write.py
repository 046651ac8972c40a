"""The statistics as Markdown (for people) and CSV (for pandas), and their number formats."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

COLUMN_TITLES = {
    "rule": "rule", "group": "group", "bin": "bin", "gts": "GTs", "positives": "positives",
    "pos_per_gt_mean": "pos/GT mean", "pos_per_gt_median": "median", "pos_per_gt_p10": "p10",
    "zero_pos_pct": "0 pos %", "mean_iou": "IoU",
}


# The agreement table (``inspect.agreement``): its own titles where they differ.
AGREEMENT_TITLES = {
    "gts": "GTs compared", "jaccard_mean": "Jaccard mean",
    "other_in_reference_pct": "rule's in ref. %", "reference_in_other_pct": "ref.'s in rule %",
    "identical_pct": "identical %",
}
AGREEMENT_NOTES = (
    "GTs compared: GTs with a positive under the reference rule or this rule (A: its positive "
    "anchors under the reference, B: under this rule)",
    "Jaccard mean: mean over those GTs of |A n B| / |A u B|; identical %: share of them with A = B",
    "rule's in ref. %: sum |A n B| / sum |B| over the group (this rule's positives the reference "
    "picks too); ref.'s in rule %: sum |A n B| / sum |A|",
)
LABEL_COLUMNS = ("reference", "rule", "group", "bin")


def column_title(column: str) -> str:
    """Printed name of a statistics column (``P3_pct`` -> ``P3 %``)."""
    return COLUMN_TITLES.get(column, column.replace("_pct", " %"))


def format_value(column: str, value: object) -> str:
    """Counts as integers, IoU and Jaccard with 3 decimals, percentages with 1, means with 2;
    NaN -> '-'."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("gts", "positives"):
        return str(int(value))
    if column in ("mean_iou", "jaccard_mean"):
        return f"{value:.3f}"
    if column.endswith("_pct"):
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown_table(frame: pd.DataFrame, titles: Mapping[str, str] | None = None) -> list[str]:
    """The lines of ``frame`` as a Markdown table; ``titles`` overrides ``column_title``."""
    columns = list(frame.columns)
    titles = titles or {}
    lines = ["| " + " | ".join(titles.get(c, column_title(c)) for c in columns) + " |"]
    lines.append("|" + "|".join("---" if c in LABEL_COLUMNS else "---:" for c in columns) + "|")
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(format_value(c, row[c]) for c in columns) + " |")
    return lines


def render_markdown(frame: pd.DataFrame, title: str, notes: Sequence[str] = ()) -> str:
    """A heading, one bullet per note, and the table."""
    lines = [f"# {title}", ""]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    lines += markdown_table(frame)
    return "\n".join(lines) + "\n"


def render_agreement_markdown(frame: pd.DataFrame) -> str:
    """A second section: the agreement of each rule with the reference rule (the ``reference``
    column, the same on every row, also names it in the heading); the columns of the CSV."""
    reference = str(frame["reference"].iloc[0])
    lines = ["", f"## Same positives as {reference}", ""]
    lines += [f"- {note}" for note in AGREEMENT_NOTES]
    lines.append("")
    lines += markdown_table(frame, AGREEMENT_TITLES)
    return "\n".join(lines) + "\n"


def write_tables(frame: pd.DataFrame, markdown: str, stem: Path) -> tuple[Path, Path]:
    """``<stem>.md`` and ``<stem>.csv`` (full precision); returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = Path(f"{stem}.md"), Path(f"{stem}.csv")
    md_path.write_text(markdown)
    frame.to_csv(csv_path, index=False)
    return md_path, csv_path


def write_agreement_csv(frame: pd.DataFrame, stem: Path) -> Path:
    """``<stem>-agreement.csv`` (full precision); returns its path."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = Path(f"{stem}-agreement.csv")
    frame.to_csv(path, index=False)
    return path
