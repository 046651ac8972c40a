"""CI regression check: train a small recipe from scratch and compare each row's AP with a baseline.

The baseline (``results/baselines/ci-mini.json``) is written by ``update_baseline`` from N seeds
per row. Its tolerance comes from that measured seed-to-seed noise:

    tolerance = max(TOLERANCE_SIGMAS x pooled std over seeds, MIN_TOLERANCE)

where the pooled std is the root mean square of the rows' standard deviations (unbiased). A row
regresses when ``now < baseline mean - tolerance``; the check trains only seed 0, so a change that
moves AP by less than a few seeds' spread passes, and a broken rule (AP collapses) fails.
"""
from __future__ import annotations

import json
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atss_bench.errors import ConfigError, StoreError
from atss_bench.job import plan_runs, run_planned
from atss_bench.job.provenance import collect_provenance
from atss_bench.job.rundir import atomic_write_json
from atss_bench.job.runner import TrainFn
from atss_bench.recipes import BUILTIN_RECIPES, Experiment, load_recipe

TOLERANCE_SIGMAS = 3.0
MIN_TOLERANCE = 0.5  # AP points: below this, differences are float noise across machines
DEFAULT_RECIPE = BUILTIN_RECIPES / "ci.yaml"
DEFAULT_BASELINE = BUILTIN_RECIPES.parent / "results" / "baselines" / "ci-mini.json"


@dataclass
class CheckRow:
    row_id: str
    label: str
    baseline: float
    now: float | None
    tolerance: float
    reason: str = ""

    @property
    def delta(self) -> float | None:
        return None if self.now is None else self.now - self.baseline

    @property
    def verdict(self) -> str:
        if self.now is None:
            return "failed"
        if self.now < self.baseline - self.tolerance:
            return "regression"
        return "better" if self.now > self.baseline + self.tolerance else "ok"


def _train(recipe_path: Path, profile: str, seeds: int, results_dir: Path,
           train_fn: TrainFn | str | None, overrides: dict[str, Any] | None, force: bool,
           rows: list[str] | None = None,
           jobs: int = 1) -> tuple[list[Experiment], dict[str, dict[str, Any]]]:
    experiments = load_recipe(recipe_path).experiments(profile=profile, seeds=seeds,
                                                       overrides=overrides, rows=rows)
    plan = plan_runs(results_dir, experiments, force=force)
    outcomes = run_planned(results_dir, plan, train_fn=train_fn, jobs=jobs)
    by_run = {o.experiment.run_id: {"metrics": o.metrics, "reason": o.reason} for o in outcomes}
    for item in plan:  # already done in this store: read back what it measured
        if not item.will_train:
            stored = json.loads((results_dir / "runs" / item.experiment.run_id / "metrics.json")
                                .read_text())
            by_run[item.experiment.run_id] = {"metrics": stored["metrics"], "reason": ""}
    return experiments, by_run


def update_baseline(recipe_path: Path = DEFAULT_RECIPE, baseline_path: Path = DEFAULT_BASELINE,
                    *, profile: str = "mini", seeds: int = 3, results_dir: Path | None = None,
                    train_fn: TrainFn | str | None = None,
                    overrides: dict[str, Any] | None = None, jobs: int = 1) -> dict[str, Any]:
    """Train every row with ``seeds`` seeds (``jobs`` at a time) and write the baseline (with
    its provenance); runs already done in ``results_dir`` are reused."""
    if seeds < 2:
        raise ConfigError("--seeds must be >= 2 for a baseline", hint="the tolerance needs a std")
    with tempfile.TemporaryDirectory(prefix="atss-check-") as tmp:
        store = Path(results_dir or tmp)
        experiments, by_run = _train(recipe_path, profile, seeds, store, train_fn, overrides,
                                     force=False, jobs=jobs)
    rows: dict[str, dict[str, Any]] = {}
    for exp in experiments:
        result = by_run.get(exp.run_id, {})
        if not result.get("metrics"):
            raise StoreError(f"baseline run {exp.row_id} seed {exp.seed} failed: "
                             f"{result.get('reason', 'no result')}")
        row = rows.setdefault(exp.row_id, {"label": exp.label, "AP": [], "AP50": [], "run_ids": []})
        row["AP"].append(result["metrics"]["AP"])
        row["AP50"].append(result["metrics"]["AP50"])
        row["run_ids"].append(exp.run_id)
    stds = [statistics.stdev(r["AP"]) for r in rows.values()]
    pooled = math.sqrt(sum(s * s for s in stds) / len(stds))
    baseline = {
        "recipe": _display_path(recipe_path), "profile": profile, "seeds": seeds,
        "tolerance_AP": round(max(TOLERANCE_SIGMAS * pooled, MIN_TOLERANCE), 3),
        "pooled_std_AP": round(pooled, 3),
        "rule": f"regression if AP < mean - max({TOLERANCE_SIGMAS} x pooled seed std, "
                f"{MIN_TOLERANCE})",
        "overrides": overrides or {},
        "rows": {rid: {"label": r["label"], "AP_mean": round(statistics.fmean(r["AP"]), 3),
                       "AP_std": round(statistics.stdev(r["AP"]), 3),
                       "AP": r["AP"], "AP50": r["AP50"], "run_ids": r["run_ids"]}
                 for rid, r in rows.items()},
        "provenance": collect_provenance(),
    }
    baseline_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(baseline_path, baseline)
    return baseline


def _display_path(path: Path) -> str:
    """Repository-relative where possible, so a baseline names no machine's folders."""
    try:
        return str(Path(path).resolve().relative_to(BUILTIN_RECIPES.parent))
    except ValueError:
        return str(path)


def load_baseline(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: baseline not found",
                          hint="create it with `atss-bench check --update-baseline`")
    try:
        data = json.loads(path.read_text())
        data["rows"], data["tolerance_AP"]  # noqa: B018  (required keys)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a valid baseline ({exc})",
                          hint="regenerate it with `atss-bench check --update-baseline`") from None
    return data


def run_check(recipe_path: Path = DEFAULT_RECIPE, baseline_path: Path = DEFAULT_BASELINE, *,
              results_dir: Path | None = None, train_fn: TrainFn | str | None = None,
              rows: list[str] | None = None, jobs: int = 1) -> list[CheckRow]:
    """Train seed 0 of every baseline row from scratch (``jobs`` at a time) and compare its AP
    (never reuses runs)."""
    baseline = load_baseline(baseline_path)
    with tempfile.TemporaryDirectory(prefix="atss-check-") as tmp:
        store = Path(results_dir or tmp)
        experiments, by_run = _train(recipe_path, baseline["profile"], 1, store, train_fn,
                                     baseline.get("overrides") or None, force=True, rows=rows,
                                     jobs=jobs)
    checked = []
    for exp in experiments:
        expected = baseline["rows"].get(exp.row_id)
        if expected is None:
            raise ConfigError(f"{baseline_path}: no baseline for row '{exp.row_id}'",
                              hint="update it with `atss-bench check --update-baseline`")
        result = by_run.get(exp.run_id, {})
        now = result.get("metrics", {}).get("AP") if result.get("metrics") else None
        checked.append(CheckRow(exp.row_id, exp.label, expected["AP_mean"], now,
                                baseline["tolerance_AP"], result.get("reason", "")))
    return checked
