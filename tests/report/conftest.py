"""Fixed results DataFrames for report tests: exact values, every run state, several seeds."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from atss_bench.recipes import METRICS, Recipe, load_recipe
from atss_bench.report.summary import seed_run_ids

GOLDEN = Path(__file__).parent / "golden"
UPDATE_ENV = "ATSS_BENCH_UPDATE_GOLDEN"  # ATSS_BENCH_UPDATE_GOLDEN=1 pytest tests/report
COMMIT_A = "0123456789abcdef0123456789abcdef01234567"
COMMIT_B = "fedcba9876543210fedcba9876543210fedcba98"


def results_frame(recipe: Recipe, profile: str, spec: dict[str, list[Any]],
                  shift: float = 0.0) -> pd.DataFrame:
    """Store-shaped rows; spec: row id -> one entry per seed offset.

    Entries: a float (done; every metric = paper + shift + value), ("failed", reason),
    ("running", iter, max_iter), ("pending",), ("timed-out", reason), ("cancelled", reason),
    or None (no record for that seed).
    """
    ids = seed_run_ids(recipe, profile, max(len(v) for v in spec.values()))
    records = []
    for row in recipe.rows:
        for seed, entry in enumerate(spec.get(row.id, [])):
            if entry is None:
                continue
            record: dict[str, Any] = {
                "run_id": ids[row.id][seed], "recipe": recipe.path, "table": recipe.table,
                "row_id": row.id, "label": row.label, "profile": profile, "seed": seed,
                "status": "done", "reason": None, "iter": None, "max_iter": None,
                "git_commit": COMMIT_B if seed == 2 else COMMIT_A, "git_dirty": seed == 2,
                "device": "cuda" if profile == "full" else "cpu",
                "world_size": 8 if profile == "full" else 1, "wall_time": 900.0,
            }
            if isinstance(entry, (int, float)):
                for m in METRICS:
                    paper = row.paper.get(m, 30.0)
                    record[m] = round(paper + shift + entry, 4)
            else:
                state, *rest = entry
                record.update(status=state, wall_time=None, git_commit=None)
                if state == "running":
                    record.update(iter=rest[0], max_iter=rest[1])
                elif rest:
                    record["reason"] = rest[0]
            records.append(record)
    return pd.DataFrame.from_records(records)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get(UPDATE_ENV):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with {UPDATE_ENV}=1 once and review it"
    assert text == path.read_text(encoding="utf-8")


@pytest.fixture
def table():
    """table(n) -> the shipped recipe of paper table n."""
    return lambda n: load_recipe(f"recipes/table{n}.yaml")


@pytest.fixture
def make_frame():
    return results_frame


@pytest.fixture
def golden():
    return check_golden
