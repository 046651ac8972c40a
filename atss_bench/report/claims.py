"""The paper's claims checked against the store: measured difference, its error, a verdict.

A claim compares recipe rows by their mean AP over seeds (``recipes/claims/paper.yaml``):

- ``better``: ``row`` beats ``than``; difference = mean(row) - mean(than).
- ``same``: ``row`` and ``than`` do not differ; same difference.
- ``flat``: ``rows`` do not differ; difference = the spread, best row mean - worst row mean.

The error of a difference is the standard error of the two means combined,
``sqrt(s1^2/n1 + s2^2/n2)`` (s: the sample std over seeds). Verdicts at two standard errors:

- better: ``holds`` when diff > 2 SE, ``reversed`` when diff < -2 SE, else ``within noise``;
- same / flat: ``no difference seen`` when |diff| <= 2 SE, else ``differs``.

A spread picks the best and the worst of several rows, so it overstates the true difference:
``flat`` holding is the conservative answer. Fewer than 2 seeds on a side: no error, ``n < 2``.
Failed runs of a compared row (a diverged baseline) are named in the verdict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import pandas as pd
from pydantic import Field, ValidationError, model_validator

from atss_bench.config import Strict
from atss_bench.errors import ConfigError
from atss_bench.recipes import BUILTIN_RECIPES, Recipe, load_recipe
from atss_bench.report.summary import MetricStat, summarize_table
from atss_bench.yamlio import load_yaml_mapping

PAPER_CLAIMS = BUILTIN_RECIPES / "claims" / "paper.yaml"
Z = 2.0  # verdict threshold in standard errors
ROW_REF = r"^[0-9A-Za-z_-]+:[A-Za-z0-9][A-Za-z0-9_.-]*$"  # <table>:<row id>


class Claim(Strict):
    id: str
    claim: str
    kind: Literal["better", "same", "flat"]
    row: str | None = Field(default=None, pattern=ROW_REF)
    than: str | None = Field(default=None, pattern=ROW_REF)
    rows: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rows_fit_kind(self) -> "Claim":
        if self.kind == "flat":
            if len(self.rows) < 2 or self.row or self.than:
                raise ValueError("a flat claim lists 2 or more `rows` and no row/than")
        elif not (self.row and self.than) or self.rows:
            raise ValueError(f"a {self.kind} claim names `row` and `than`, not `rows`")
        return self

    def refs(self) -> list[str]:
        return self.rows if self.kind == "flat" else [str(self.row), str(self.than)]


class ClaimSet(Strict):
    claims: list[Claim] = Field(min_length=1)


@dataclass(frozen=True)
class RowAP:
    stat: MetricStat  # AP over the finished seeds
    failed: int = 0  # runs of the row that failed (diverged, crashed)


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    paper: float | None  # the paper's difference (or spread), AP points
    diff: float | None  # ours
    se: float | None
    n: tuple[int, ...]  # finished seeds of each compared row
    verdict: str


def load_claims(path: str | Path = PAPER_CLAIMS) -> list[Claim]:
    path = Path(path)
    data = load_yaml_mapping(path, what="claims file")
    try:
        claims = ClaimSet.model_validate(data).claims
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        raise ConfigError(f"{path}: {loc}: {error['msg']}",
                          hint=f"compare with {PAPER_CLAIMS}") from None
    return claims


def _se(stat: MetricStat) -> float | None:
    return None if stat.std is None or stat.n < 2 else stat.std / math.sqrt(stat.n)


def _combined(*stats: MetricStat) -> float | None:
    errors = [_se(s) for s in stats]
    return None if any(e is None for e in errors) else math.sqrt(sum(e * e for e in errors))


def _verdict(kind: str, diff: float | None, se: float | None) -> str:
    if diff is None:
        return "not run"
    if se is None:
        return "n < 2"
    if kind == "better":
        return "holds" if diff > Z * se else "reversed" if diff < -Z * se else "within noise"
    return "no difference seen" if abs(diff) <= Z * se else "differs"


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def evaluate_claim(claim: Claim, rows: dict[str, RowAP]) -> ClaimResult:
    """``rows``: ``<table>:<row>`` -> the row's AP statistics and failed runs."""
    missing = [ref for ref in claim.refs() if ref not in rows]
    if missing:
        raise ConfigError(f"claim '{claim.id}': no recipe row {', '.join(missing)}",
                          hint="rows are <table>:<row id> of the shipped recipes")
    picked = [rows[ref].stat for ref in claim.refs()]
    n = tuple(s.n for s in picked)
    result = _compare(claim, picked, n)
    failed = [f"{ref}: {rows[ref].failed} of {rows[ref].failed + rows[ref].stat.n} runs failed"
              for ref in claim.refs() if rows[ref].failed]
    if not failed:
        return result
    verdict = "; ".join(failed if result.diff is None else [result.verdict, *failed])
    return ClaimResult(claim, result.paper, result.diff, result.se, n, verdict)


def _compare(claim: Claim, picked: list[MetricStat], n: tuple[int, ...]) -> ClaimResult:
    if claim.kind != "flat":
        row, than = picked
        diff, se = _diff(row.mean, than.mean), _combined(row, than)
        paper = _diff(row.paper, than.paper)
    else:
        means = [s.mean for s in picked]
        papers = [s.paper for s in picked]
        if any(m is None for m in means):
            diff = se = None
        else:
            best = max(range(len(picked)), key=lambda i: means[i])
            worst = min(range(len(picked)), key=lambda i: means[i])
            diff = means[best] - means[worst]
            se = _combined(picked[best], picked[worst])
        paper = None if None in papers else max(papers) - min(papers)
    return ClaimResult(claim, paper, diff, se, n, _verdict(claim.kind, diff, se))


def evaluate_claims(claims: Sequence[Claim], results_df: pd.DataFrame, profile: str,
                    recipes: Sequence[Recipe] | None = None,
                    seeds: int | None = None) -> list[ClaimResult]:
    """Every claim against the store; ``recipes`` default to the shipped tables it names."""
    tables = {ref.split(":")[0] for claim in claims for ref in claim.refs()}
    if recipes is None:
        recipes = [load_recipe(BUILTIN_RECIPES / f"table{t}.yaml") for t in sorted(tables)]
    rows: dict[str, RowAP] = {}
    for recipe in recipes:
        summary = summarize_table(recipe, results_df, profile, seeds)
        for row in summary.rows:
            failed = sum(r["status"] == "failed" for r in row.others)
            ap = row.metrics.get("AP") or MetricStat(row.row.paper.get("AP"))
            rows[f"{recipe.table}:{row.row.id}"] = RowAP(ap, failed)
    return [evaluate_claim(claim, rows) for claim in claims]


def _signed(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def render_claims(results: Sequence[ClaimResult], profile: str) -> str:
    """Markdown: claim | paper | ours (± SE) | n | verdict."""
    lines = [
        f"## The paper's claims on the {profile} profile",
        "",
        "Differences in AP points: mean over seeds of the first row minus the second "
        "(a spread for a sweep); ± one standard error; verdict at 2 standard errors.",
        "",
        "| claim | paper | ours | seeds | verdict |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for r in results:
        ours = _signed(r.diff) if r.se is None else f"{_signed(r.diff)} ± {r.se:.2f}"
        paper = _signed(r.paper, 1)
        if r.claim.kind == "flat":
            paper, ours = paper.lstrip("+"), ours.lstrip("+")
        seeds = "/".join(str(n) for n in r.n)
        lines.append(f"| {r.claim.claim} | {paper} | {ours} | {seeds} | {r.verdict} |")
    return "\n".join(lines) + "\n"
