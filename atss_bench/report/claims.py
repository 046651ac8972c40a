"""The paper's claims checked against the store: our difference, its 95% interval, a verdict.

A claim compares recipe rows by their mean AP over seeds (``recipes/claims/paper.yaml``; a claim
may name another COCO metric of the rows' tables, e.g. ``metric: APl`` for large objects):

- ``better``: ``row`` beats ``than``. The paper's effect is its own difference of the two rows.
- ``same``: ``row`` and ``than`` do not differ. A difference of 0 cannot be resolved, so the claim
  names the paper's ``effect`` it is contrasted with (two rows whose paper difference is one the
  paper does call an effect, e.g. the sample definition's 0.8 AP against box vs point's 0.0).
- ``flat``: no row of a sweep differs from its ``reference`` row (the paper's default setting);
  also with an ``effect``. Each row is compared with the reference, never best vs worst: the
  range of several noisy means is biased upward and has no Welch interval.

Every comparison is Welch's 95% interval (:mod:`atss_bench.report.stats`); a sweep's intervals
are simultaneous (Bonferroni: each at 1 - 0.05/m for m rows besides the reference). Verdicts:

- better: ``holds`` when the interval lies above 0, ``reversed`` below 0, else ``inconclusive``;
- same / flat, X = the largest |difference| an interval allows (``Interval.bound``), E = effect:
  0 inside and X <= E: ``no difference: within +-X AP``; 0 inside and X > E: ``inconclusive``;
  0 outside: ``differs`` (``by less than the effect`` when X <= E).

X is the interval's farthest end, not its half-width: diff +1.0 +- 0.5 is within +-1.5 AP, not
+-0.5. A compared row without finished seeds: ``not run (missing: ...)``; one seed: no interval.
Failed runs of a compared row (a diverged baseline) are named in the verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from atss_bench.errors import ConfigError
from atss_bench.recipes import BUILTIN_RECIPES, Recipe, load_recipe
from atss_bench.report import stats
from atss_bench.report.claims_file import PAPER_CLAIMS, Claim, Pair, load_claims
from atss_bench.report.summary import MetricStat, summarize_table

__all__ = ["PAPER_CLAIMS", "Claim", "ClaimResult", "RowAP", "evaluate_claim", "evaluate_claims",
           "load_claims", "render_claims"]
ALPHA = 0.05  # 95% intervals (simultaneous over a sweep)
POWER = 0.8  # --plan: probability of resolving the paper's effect


@dataclass(frozen=True)
class RowAP:
    stat: MetricStat  # AP over the finished seeds
    failed: int = 0  # runs of the row that failed (diverged, crashed)


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    paper: float | None  # the paper's difference (a sweep: its row farthest from the reference)
    effect: float | None  # the paper's effect the claim is judged against (see module docstring)
    pair: Pair  # the rows of ``diff`` (a sweep: ours farthest from the reference)
    interval: stats.Interval | None  # ours: Welch, 95% (simultaneous over a sweep)
    diff: float | None  # ours, difference of mean AP
    n: tuple[int, ...]  # finished seeds of each compared row
    verdict: str
    noise: float | None = None  # seed std pooled over the compared rows
    seeds_needed: int | None = None  # per row, to resolve the effect (``stats.seeds_needed``)

    @property
    def ratio(self) -> float | None:
        """Ours / the paper's effect."""
        if self.diff is None or not self.effect:
            return None
        return self.diff / self.effect


def _paper_diff(rows: dict[str, RowAP], pair: Pair) -> float | None:
    a, b = rows[pair[0]].stat.paper, rows[pair[1]].stat.paper
    return None if a is None or b is None else a - b


def _paper_values(claim: Claim, rows: dict[str, RowAP]) -> tuple[float | None, float | None]:
    """The paper's difference for the claim and the effect it is judged against."""
    diffs = [_paper_diff(rows, pair) for pair in claim.comparisons()]
    known = [d for d in diffs if d is not None]
    paper = max(known, key=abs) if len(known) == len(diffs) else None
    if claim.effect is None:
        return paper, paper
    effect = _paper_diff(rows, (claim.effect.row, claim.effect.than))
    if effect == 0:
        raise ConfigError(f"claim '{claim.id}': its effect rows have the same paper AP",
                          hint="name two rows whose paper difference the paper calls an effect")
    return paper, None if effect is None else abs(effect)


def _interval(rows: dict[str, RowAP], pair: Pair, confidence: float) -> stats.Interval:
    a, b = rows[pair[0]].stat, rows[pair[1]].stat
    return stats.welch_interval(a.mean, a.std, a.n, b.mean, b.std, b.n,  # type: ignore[arg-type]
                                confidence=confidence)


def _verdict_better(iv: stats.Interval) -> str:
    if iv.low > 0:
        return "holds (interval above 0)"
    if iv.high < 0:
        return "reversed (interval below 0)"
    return "inconclusive (interval contains 0)"


def _verdict_same(checked: list[tuple[Pair, stats.Interval]], effect: float | None,
                  reference: str | None, unit: str = "AP") -> str:
    """``checked``: every comparison with its interval, the shown one first; ``unit``: the
    compared metric."""
    (pair, shown), bound = checked[0], max(iv.bound for _, iv in checked)
    within = (f"every row within ±{bound:.2f} {unit} of {reference}" if reference
              else f"within ±{bound:.2f} {unit}")
    which = f"{pair[0]} vs {pair[1]}: " if reference else ""
    if shown.excludes_zero:
        if effect is not None and bound <= effect:
            return f"differs, by less than the effect ({which}interval excludes 0): {within}"
        return f"differs ({which}interval excludes 0)"
    if effect is None:
        return "inconclusive (no paper effect to compare with)"
    if bound <= effect:
        return f"no difference: {within}"
    return (f"inconclusive ({which}interval reaches ±{shown.bound:.2f} {unit}, more than the "
            f"{effect:.1f} {unit} effect)")


def _availability(claim: Claim, rows: dict[str, RowAP]) -> str | None:
    """Why there is no interval, or None."""
    missing = [ref for ref in claim.refs() if rows[ref].stat.n == 0 and not rows[ref].failed]
    if missing:
        return f"not run (missing: {', '.join(missing)})"
    if any(rows[ref].stat.n == 0 for ref in claim.refs()):
        return ""  # every run of a row failed: the failure notes say it
    single = [ref for ref in claim.refs() if rows[ref].stat.n == 1]
    return f"no interval (1 seed: {', '.join(single)})" if single else None


def _noise_and_plan(claim: Claim, rows: dict[str, RowAP],
                    effect: float | None) -> tuple[float | None, int | None]:
    picked = [rows[ref].stat for ref in claim.refs() if rows[ref].stat.n >= 2]
    if not picked:
        return None, None
    noise = stats.pooled_std([s.std or 0.0 for s in picked], [s.n for s in picked])
    if not effect:
        return noise, None
    return noise, stats.seeds_needed(noise, effect, equivalence=claim.kind != "better",
                                     comparisons=len(claim.comparisons()), alpha=ALPHA,
                                     power=POWER)


def evaluate_claim(claim: Claim, rows: dict[str, RowAP]) -> ClaimResult:
    """``rows``: ``<table>:<row>`` -> the row's statistics of ``claim.metric`` and failed runs."""
    unknown = [ref for ref in claim.all_refs() if ref not in rows]
    if unknown:
        raise ConfigError(f"claim '{claim.id}': no recipe row {', '.join(unknown)}",
                          hint="rows are <table>:<row id> of the shipped recipes")
    paper, effect = _paper_values(claim, rows)
    noise, plan = _noise_and_plan(claim, rows, effect)
    n = tuple(rows[ref].stat.n for ref in claim.refs())
    comparisons = claim.comparisons()
    reason = _availability(claim, rows)
    pair, interval, verdict = comparisons[0], None, reason or ""
    if reason is None:
        confidence = 1.0 - ALPHA / len(comparisons)
        checked = [(p, _interval(rows, p, confidence)) for p in comparisons]
        checked.sort(key=lambda c: (not c[1].excludes_zero,
                                    -(abs(c[1].diff) if c[1].excludes_zero else c[1].bound)))
        pair, interval = checked[0]
        verdict = (_verdict_better(interval) if claim.kind == "better" else
                   _verdict_same(checked, effect, claim.reference, claim.metric))
    failed = [f"{ref}: {rows[ref].failed} of {rows[ref].failed + rows[ref].stat.n} runs failed"
              for ref in claim.refs() if rows[ref].failed]
    verdict = "; ".join(part for part in (verdict, *failed) if part)
    diff = interval.diff if interval else _mean_diff(rows, pair)
    return ClaimResult(claim, paper, effect, pair, interval, diff, n, verdict, noise, plan)


def _mean_diff(rows: dict[str, RowAP], pair: Pair) -> float | None:
    a, b = rows[pair[0]].stat.mean, rows[pair[1]].stat.mean
    return None if a is None or b is None else a - b


def evaluate_claims(claims: Sequence[Claim], results_df: pd.DataFrame, profile: str,
                    recipes: Sequence[Recipe] | None = None,
                    seeds: int | None = None) -> list[ClaimResult]:
    """Every claim against the store; ``recipes`` default to the shipped tables it names."""
    tables = {ref.split(":")[0] for claim in claims for ref in claim.all_refs()}
    if recipes is None:
        recipes = [load_recipe(BUILTIN_RECIPES / f"table{t}.yaml") for t in sorted(tables)]
    by_metric: dict[str, dict[str, RowAP]] = {}  # metric -> <table>:<row> -> its statistics
    for recipe in recipes:
        summary = summarize_table(recipe, results_df, profile, seeds)
        for row in summary.rows:
            failed = sum(r["status"] == "failed" for r in row.others)
            ref = f"{recipe.table}:{row.row.id}"
            for metric in {*row.metrics, "AP"}:
                stat = row.metrics.get(metric) or MetricStat(row.row.paper.get(metric))
                by_metric.setdefault(metric, {})[ref] = RowAP(stat, failed)
    return [evaluate_claim(claim, _rows_with_metric(claim, by_metric)) for claim in claims]


def _rows_with_metric(claim: Claim, by_metric: dict[str, dict[str, RowAP]]) -> dict[str, RowAP]:
    """The rows' statistics of the claim's metric; ConfigError when a compared row's table does
    not report it."""
    if claim.metric == "AP":
        return by_metric.get("AP", {})
    rows = by_metric.get(claim.metric, {})
    lacking = [ref for ref in claim.all_refs() if ref not in rows and ref in by_metric.get("AP", {})]
    if lacking:
        raise ConfigError(f"claim '{claim.id}': {', '.join(lacking)} report no {claim.metric}",
                          hint="a claim's metric must be one of its rows' table metrics")
    return rows


METHOD = (
    "Differences of mean AP over seeds, in AP points (another COCO metric where the claim names "
    "it): the first row minus the second; for a sweep, "
    "the row farthest from the reference row minus the reference. 95% CI: Welch's interval, df "
    "its Welch–Satterthwaite degrees of freedom; a sweep's intervals hold together (Bonferroni "
    "over its rows). Effect: the paper's gain for a claim that one row beats another; for a "
    "no-difference claim, the paper's gain it is contrasted with (listed below). Verdicts: "
    "\"holds\" / \"reversed\" only when the interval excludes 0, else \"inconclusive\"; a "
    "no-difference claim reads \"no difference: within ±X AP\" when the interval contains 0 and "
    "its farthest end X is at most the effect, \"inconclusive\" when X exceeds the effect, "
    "\"differs\" when the interval excludes 0.")
PLAN_METHOD = (
    "Seeds per row needed: the smallest n for which a 95% Welch interval resolves the paper's "
    "effect with probability 80%, both rows with the seed std σ pooled over the compared rows "
    "(shown): it excludes 0 when the true difference is the paper's gain, it lies within "
    "±effect when the true difference is 0 (no-difference claims). n solves "
    "effect >= (t(0.975, 2n−2) + t(q, 2n−2)) · σ · √(2/n), q = 0.8 for a gain and 0.9 for a "
    "no-difference claim, with α and 1 − power split evenly over a sweep's rows (Bonferroni). "
    f"\"–\": no compared row has 2 seeds; \"> {stats.MAX_SEEDS}\": beyond that.")


def _signed(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _plan_cell(r: ClaimResult) -> str:
    if r.noise is None or not r.effect:
        return "–"
    needed = f"> {stats.MAX_SEEDS}" if r.seeds_needed is None else str(r.seeds_needed)
    return f"{needed} (σ {r.noise:.2f})"


def _row_cells(r: ClaimResult) -> list[str]:
    iv = r.interval
    ci = "–" if iv is None else f"[{iv.low:+.2f}, {iv.high:+.2f}]"
    df = "–" if iv is None or iv.df is None else f"{iv.df:.1f}"
    ratio = "–" if r.ratio is None else f"{r.ratio:+.2f}×"
    effect = "–" if r.effect is None else f"{r.effect:.1f}"
    return [r.claim.claim, _signed(r.paper, 1), effect, _signed(r.diff), ci, df,
            "/".join(str(n) for n in r.n), ratio]


def _effects_note(results: Sequence[ClaimResult]) -> list[str]:
    lines = []
    for r in results:
        if r.claim.effect is not None:
            e = r.claim.effect
            effect = "–" if r.effect is None else f"{r.effect:.1f} AP"
            lines.append(f"- {r.claim.claim}: effect {effect}, the paper's {e.row} − {e.than}")
    return ["Effects of the no-difference claims:", "", *lines, ""] if lines else []


def render_claims(results: Sequence[ClaimResult], profile: str, plan: bool = False) -> str:
    """Markdown: claim | paper | effect | ours | 95% CI | df | seeds | ratio | (plan) | verdict."""
    columns = ["claim", "paper Δ", "effect", "ours Δ", "95% CI", "df", "seeds", "ours / effect",
               *(["seeds/row needed"] if plan else []), "verdict"]
    lines = [f"## The paper's claims on the {profile} profile", "", METHOD, "",
             "| " + " | ".join(columns) + " |",
             "| --- " + "| ---: " * 7 + ("| ---: " if plan else "") + "| --- |"]
    for r in results:
        cells = [*_row_cells(r), *([_plan_cell(r)] if plan else []), r.verdict]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *_effects_note(results)]
    if plan:
        lines += [PLAN_METHOD, ""]
    return "\n".join(lines)
