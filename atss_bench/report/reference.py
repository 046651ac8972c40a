"""Our numbers next to a committed reference reproduction: is a fresh run within seed noise?

``make demo`` trains seed 0 of Table 2's rows on mini-COCO; another CPU or library build gives
other numbers (float summation order changes the whole trajectory), so "equal to the committed
run" is the wrong test. The right one asks whether ours could be one more seed of the reference:

    consistent  <=>  |ours - m| <= t(0.995, df) * s * sqrt(1/k + 1/n)

with m the mean of the row's n reference seeds, ours the mean of our k seeds, and s the seed-to-seed
std pooled over the table's reference rows (s^2 = sum (n_i - 1) s_i^2 / df, df = sum (n_i - 1)):
the two-sided 99% prediction interval for the mean of k new seeds, assuming normal seed noise
with one variance across the table's rows, here and there (Student's t because s is estimated).
Pooling matters: one row's 3 seeds give df = 2 and t = 9.92, an interval of +-11.5 s that says
almost nothing; Table 2's four rows give df = 8 and t = 3.36. 99% rather than 95% because a table
has several rows: at 95% a correct install would see some "no" in 4 cells one time in five.
No reference row with 2 seeds: no std, no verdict (``n/a``).

Runs are matched by run id (the config hash, seed included), as in every report, so the
reference must be a store made with the same recipe, profile and overrides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from atss_bench.errors import ConfigError
from atss_bench.recipes import Recipe, RecipeRow
from atss_bench.report.markdown import markdown_table, mean_std_text, runs_text
from atss_bench.report.summary import MetricStat, RowSummary, summarize_table

CONFIDENCE = 0.99  # two-sided


def _t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` degrees of freedom, exact for integer df
    (Abramowitz & Stegun 26.7.3-26.7.4: finite series in theta = atan(t / sqrt(df)))."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 0:
        term = total = 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * cos2
            total += term
        return math.sin(theta) * total
    total = 0.0
    if df > 1:
        term = total = math.cos(theta)
        for k in range(1, (df - 1) // 2):
            term *= (2 * k) / (2 * k + 1) * cos2
            total += term
    return 2.0 / math.pi * (theta + math.sin(theta) * total)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``p`` >= 0.5) of Student's t with ``df`` >= 1 degrees of freedom."""
    if not 0.5 <= p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df >= 1, got p={p}, df={df}")
    two_sided = 2.0 * p - 1.0
    low, high = 0.0, 1.0
    while _t_two_sided_cdf(high, df) < two_sided:
        high *= 2.0
    for _ in range(200):  # bisection to float precision
        mid = (low + high) / 2.0
        if mid in (low, high):
            break
        low, high = (mid, high) if _t_two_sided_cdf(mid, df) < two_sided else (low, mid)
    return high


def consistency_limit(std: float, n_reference: int, k_ours: int = 1, df: int | None = None,
                      confidence: float = CONFIDENCE) -> float:
    """Half-width of the prediction interval for the mean of ``k_ours`` new seeds around the mean
    of ``n_reference`` seeds, with a std estimated on ``df`` degrees of freedom (default
    ``n_reference - 1``: the row's own seeds; see the module docstring)."""
    quantile = t_quantile(0.5 + confidence / 2.0, n_reference - 1 if df is None else df)
    return quantile * std * math.sqrt(1.0 / k_ours + 1.0 / n_reference)


@dataclass(frozen=True)
class PooledStd:
    """The seed-to-seed std pooled over rows (each row's variance around its own mean)."""

    std: float
    df: int


def pool_std(stats: list[MetricStat]) -> PooledStd | None:
    """Pooled std over the rows with >= 2 seeds; None when there is none."""
    usable = [s for s in stats if s.n >= 2 and s.std is not None]
    df = sum(s.n - 1 for s in usable)
    if df == 0:
        return None
    variance = sum((s.n - 1) * s.std ** 2 for s in usable) / df  # type: ignore[operator]
    return PooledStd(math.sqrt(variance), df)


@dataclass(frozen=True)
class ReferenceRow:
    """One recipe row: our value, the reference's, and the verdict."""

    summary: RowSummary  # ours
    ours: MetricStat
    reference: MetricStat
    pooled: PooledStd | None  # over the table's reference rows

    @property
    def row(self) -> RecipeRow:
        return self.summary.row

    @property
    def delta(self) -> float | None:
        if self.ours.mean is None or self.reference.mean is None:
            return None
        return self.ours.mean - self.reference.mean

    @property
    def limit(self) -> float | None:
        """The largest |delta| still consistent; None without a std of the reference."""
        if self.pooled is None or self.reference.n < 1 or self.ours.n < 1:
            return None
        return consistency_limit(self.pooled.std, self.reference.n, self.ours.n, self.pooled.df)

    @property
    def consistent(self) -> str:
        if self.ours.mean is None:
            return "–"
        if self.reference.n == 0:
            return "n/a (no reference run)"
        if self.limit is None or self.delta is None:
            return "n/a (reference n < 2)"
        return "yes" if abs(self.delta) <= self.limit else "no"


def compare_with_reference(recipe: Recipe, results: pd.DataFrame, reference: pd.DataFrame,
                           profile: str = "full", seeds: int | None = None,
                           overrides: Mapping[str, Any] | None = None) -> list[ReferenceRow]:
    """Per recipe row, our mean of the layout's first metric (over ``seeds``, default all found)
    beside the reference's mean ± std over every seed it has."""
    metric = recipe.layout.metrics[0]
    ours = summarize_table(recipe, results, profile, seeds, overrides).rows
    refs = summarize_table(recipe, reference, profile, None, overrides).rows
    pooled = pool_std([r.metrics[metric] for r in refs])
    return [ReferenceRow(o, o.metrics[metric], r.metrics[metric], pooled)
            for o, r in zip(ours, refs, strict=True)]


def render_reference(recipe: Recipe, rows: list[ReferenceRow], reference_name: str) -> str:
    """A Markdown section: Method | ours | reference (n seeds) | Δ | consistent, and the rule.
    ``consistent`` says ``yes (within ±L)`` or ``no (outside ±L)``, L the largest consistent |Δ|."""
    metric = recipe.layout.metrics[0]
    counts = {r.reference.n for r in rows}
    same_n = len(counts) == 1
    ref_header = f"{metric} reference ({counts.pop()} seeds)" if same_n else f"{metric} reference"
    table_rows = []
    for r in rows:
        ours = mean_std_text(r.ours) if r.ours.mean is not None else runs_text(r.summary)
        ref = mean_std_text(r.reference) + ("" if same_n else f" (n={r.reference.n})")
        delta = "–" if r.delta is None else f"{r.delta:+.1f}"
        verdict = r.consistent
        if r.limit is not None and verdict in ("yes", "no"):
            verdict += f" ({'within' if verdict == 'yes' else 'outside'} ±{r.limit:.1f})"
        table_rows.append([r.row.label, ours, ref, delta, verdict])
    table = markdown_table(["Method", f"{metric} ours", ref_header, "Δ", "consistent"], table_rows)
    name = "".join(c if c.isprintable() and c != "`" else "?" for c in reference_name)
    pooled = rows[0].pooled if rows else None
    pooled_text = ("" if pooled is None else
                   f" (here s = {pooled.std:.2f} AP on {pooled.df} degrees of freedom)")
    rule = (f"Reference = mean ± std over the finished seeds in `{name}`; Δ = ours − "
            "reference mean. consistent: |Δ| ≤ t(0.995, df) · s · √(1/k + 1/n), the 99% "
            "prediction interval for the mean of our k seeds given the row's n reference seeds, "
            "with s the seed-to-seed std pooled over the table's reference rows"
            f"{pooled_text}: seed noise, not bit-identity (another CPU or library build trains "
            "differently).")
    return "\n\n".join([f"### Table {recipe.table}: ours vs. the reference", table, rule]) + "\n"


def check_reference_dir(path: Path) -> Path:
    """``path`` if it is a results folder (has ``runs/``), else a one-line ``ConfigError``."""
    if not (Path(path) / "runs").is_dir():
        raise ConfigError(f"{path}: not a results folder (no runs/ in it)",
                          hint="e.g. --reference results/mini, the committed reproduction")
    return Path(path)


def build_reference_report(recipes: list[Recipe], results: pd.DataFrame, reference: pd.DataFrame,
                           reference_name: str, profile: str = "full", seeds: int | None = None,
                           overrides: Mapping[str, Any] | None = None) -> str:
    """``render_reference`` for every recipe, one section each."""
    return "\n".join(
        render_reference(recipe, compare_with_reference(recipe, results, reference, profile,
                                                        seeds, overrides), reference_name)
        for recipe in recipes)
