"""Recipe rows x stored runs -> per-row statistics (mean, std, n, states) for tables and plots.

Runs are matched by run_id (the hash of the resolved config, seed included), never by table or
row name: identical experiments shared by two tables (Table 2's iou_box is Table 3's retinanet)
report the same runs in both.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pandas as pd

from atss_bench.config import config_hash
from atss_bench.recipes import Experiment, Recipe, RecipeRow

MAX_SEED_SCAN = 16  # seeds=None: look for seed offsets 0..15 of each row in the store
STATE_PRIORITY = ("running", "pending", "failed", "timed-out", "cancelled", "not run")
RECORD_FIELDS = ("run_id", "status", "reason", "iter", "max_iter", "git_commit", "git_dirty",
                 "device", "world_size", "wall_time", "dataset", "dataset_name", "mixed_code")


@dataclass(frozen=True)
class MetricStat:
    paper: float | None
    mean: float | None = None
    std: float | None = None
    n: int = 0

    @property
    def delta(self) -> float | None:
        if self.paper is None or self.mean is None:
            return None
        return self.mean - self.paper


@dataclass
class RowSummary:
    row: RecipeRow
    expected: int | None  # seeds asked for (None: whatever the store has)
    metrics: dict[str, MetricStat]
    done: list[dict[str, Any]] = field(default_factory=list)  # records of finished runs
    others: list[dict[str, Any]] = field(default_factory=list)  # records (or "not run") of the rest

    @property
    def n(self) -> int:
        return len(self.done)

    @property
    def state(self) -> str:
        """done if any seed finished, else the most telling state of the others."""
        if self.done:
            return "done"
        states = {r["status"] for r in self.others}
        return next((s for s in STATE_PRIORITY if s in states), "not run")


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass
class TableSummary:
    recipe: Recipe
    profile: str  # the profile's name (``mini``), also when given as a path
    data_kind: str  # "coco" or "mini"
    rows: list[RowSummary]
    dataset: str | None = None  # set when a table is drawn once per dataset: which one


def seed_run_ids(recipe: Recipe, profile: str, seeds: int,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """row id -> run ids of seed offsets 0..seeds-1 (as ``recipe.experiments(profile, seeds)``)."""
    return _seed_ids(recipe.experiments(profile=profile, seeds=1, overrides=overrides), seeds)


def _seed_ids(first_seeds: list[Experiment], seeds: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for exp in first_seeds:
        ids = [exp.run_id]
        for offset in range(1, seeds):
            config = exp.config.model_copy(update={"seed": exp.seed + offset})
            ids.append(config_hash(config))
        out[exp.row_id] = ids
    return out


def records_by_run_id(results: pd.DataFrame, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The store rows of the given run ids as plain dicts (missing columns -> None)."""
    if results is None or results.empty or "run_id" not in results.columns:
        return {}
    wanted = results[results["run_id"].isin(set(run_ids))]
    columns = [c for c in wanted.columns if c in RECORD_FIELDS or c[:2] in ("AP", "AR")]
    out: dict[str, dict[str, Any]] = {}
    for record in wanted[columns].to_dict("records"):
        clean = {k: _clean(v) for k, v in record.items()}
        out.setdefault(clean["run_id"], clean)
    return out


def _stat(paper: float | None, values: list[float]) -> MetricStat:
    """mean and sample std (n - 1) of the finished seeds."""
    if not values:
        return MetricStat(paper)
    std = statistics.stdev(values) if len(values) > 1 else None
    return MetricStat(paper, statistics.fmean(values), std, len(values))


def summarize_table(recipe: Recipe, results: pd.DataFrame, profile: str = "full",
                    seeds: int | None = None,
                    overrides: Mapping[str, Any] | None = None) -> TableSummary:
    """One summary per recipe row: mean ± std over finished seeds, states of the others.

    ``seeds=None`` takes whatever seeds the store has (offsets 0..MAX_SEED_SCAN-1); a number
    expects exactly that many and reports the missing ones as ``not run``. ``overrides`` are the
    ``--set`` values the runs were made with (they change the run ids).
    """
    first_seeds = recipe.experiments(profile=profile, seeds=1, overrides=overrides)
    rows = _summarize_rows(recipe, results, seeds,
                           _seed_ids(first_seeds, seeds or MAX_SEED_SCAN))
    first = first_seeds[0]
    return TableSummary(recipe, first.profile, first.config.data.kind, rows)


def _summarize_rows(recipe: Recipe, results: pd.DataFrame, seeds: int | None,
                    ids: dict[str, list[str]]) -> list[RowSummary]:
    records = records_by_run_id(results, (i for row_ids in ids.values() for i in row_ids))
    summaries = []
    for row in recipe.rows:
        done, others = [], []
        for offset, run_id in enumerate(ids[row.id]):
            record = records.get(run_id)
            if record is None:
                if seeds is not None or offset == 0:
                    others.append({"run_id": run_id, "status": "not run"})
            elif record.get("status") == "done" and record.get("AP") is not None:
                done.append(record)
            else:
                others.append(record)
        if seeds is None and done:
            others = [r for r in others if r["status"] != "not run"]
        metrics: dict[str, MetricStat] = {
            m: _stat(row.paper.get(m), [r[m] for r in done if r.get(m) is not None])
            for m in recipe.layout.metrics
        }
        summaries.append(RowSummary(row, seeds, metrics, done, others))
    return summaries
