"""CI regression check: train a small recipe and compare each row's AP with a baseline.

The baseline (``results/baselines/ci-mini.json``) is written by ``update_baseline`` from N seeds
per row. Its tolerance comes from that measured seed-to-seed noise:

    tolerance = max(TOLERANCE_SIGMAS x pooled std over seeds, MIN_TOLERANCE)

where the pooled std is the root mean square of the rows' standard deviations (unbiased). A row
regresses when ``now < baseline mean - tolerance``; the check trains only seed 0, so a change that
moves AP by less than a few seeds' spread passes, and a broken rule (AP collapses) fails.

Stores. By default both commands train in a private temporary store, deleted afterwards. Given a
``results_dir`` they reuse the runs already done there (never retrain, clear or rewrite them) and
train only the missing ones into it.

Staleness. A baseline lists, per row, the run ids it was made from (seeds 0..seeds-1 of its
profile and overrides). ``run_check`` first recomputes them from the recipe; when they differ
(a profile, recipe or config-default change moved them) the baseline measures other experiments,
so the check refuses with ``StaleBaselineError`` and the command that regenerates it.
"""
from __future__ import annotations

import json
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atss_bench.errors import ConfigError, TrainingError
from atss_bench.devices import resolved_device
from atss_bench.job import PlannedRun, plan_runs, refuse_conflicts, run_planned
from atss_bench.job import rundir as rd
from atss_bench.job.provenance import collect_provenance
from atss_bench.job.runner import TrainFn
from atss_bench.recipes import BUILTIN_RECIPES, Experiment, load_recipe

TOLERANCE_SIGMAS = 3.0
MIN_TOLERANCE = 0.5  # AP points: below this, differences are float noise across machines
DEFAULT_RECIPE = BUILTIN_RECIPES / "ci.yaml"
DEFAULT_BASELINE = BUILTIN_RECIPES.parent / "results" / "baselines" / "ci-mini.json"
MAX_BASELINE_BYTES = 1 << 20  # the committed one is ~3 KB
MAX_BASELINE_SEEDS = 64


class StaleBaselineError(ConfigError):
    """The baseline's run ids are not those the recipe expands to now."""


class BaselineRow(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    label: str
    AP_mean: float = Field(allow_inf_nan=False)
    run_ids: list[str] | None = None


class Baseline(BaseModel):
    """The fields of a baseline file that the check reads (others are kept for people)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    profile: str
    seeds: int = Field(ge=1, le=MAX_BASELINE_SEEDS)
    tolerance_AP: float = Field(ge=0, allow_inf_nan=False)
    overrides: dict[str, Any] = Field(default_factory=dict)
    rows: dict[str, BaselineRow] = Field(min_length=1)


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


def _stored_result(results_dir: Path, item: PlannedRun) -> dict[str, Any]:
    """What a run not trained now measured (done before in this store), or why there is none."""
    if item.action != "skip":
        return {"metrics": None, "reason": item.detail or item.action}
    stored = rd.read_done_metrics(rd.run_dir_for(results_dir, item.experiment.run_id))
    metrics = (stored or {}).get("metrics")
    if not isinstance(metrics, dict):
        return {"metrics": None, "reason": "its stored record is unreadable"}
    return {"metrics": metrics, "reason": ""}


def _train(recipe_path: Path, profile: str, seeds: int, results_dir: Path,
           train_fn: TrainFn | str | None, overrides: dict[str, Any] | None,
           rows: list[str] | None = None,
           jobs: int = 1) -> tuple[list[Experiment], dict[str, dict[str, Any]]]:
    """Train what ``results_dir`` lacks (never ``force``: done runs are read, not retrained)."""
    experiments = load_recipe(recipe_path).experiments(profile=profile, seeds=seeds,
                                                       overrides=overrides, rows=rows)
    plan = plan_runs(results_dir, experiments, force=False, device=resolved_device())
    refuse_conflicts(plan)  # a stored run of another dataset or device is never read as this one
    outcomes = run_planned(results_dir, plan, train_fn=train_fn, jobs=jobs)
    by_run = {o.experiment.run_id: {"metrics": o.metrics, "reason": o.reason} for o in outcomes}
    for item in plan:
        if not item.will_train:
            by_run[item.experiment.run_id] = _stored_result(results_dir, item)
    return experiments, by_run


def _finite_metric(result: dict[str, Any], name: str) -> float | None:
    value = (result.get("metrics") or {}).get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def update_baseline(recipe_path: Path = DEFAULT_RECIPE, baseline_path: Path = DEFAULT_BASELINE,
                    *, profile: str = "mini", seeds: int = 3, results_dir: Path | None = None,
                    train_fn: TrainFn | str | None = None,
                    overrides: dict[str, Any] | None = None, jobs: int = 1) -> dict[str, Any]:
    """Train every row with ``seeds`` seeds (``jobs`` at a time) and write the baseline (with
    its provenance and run ids); runs already done in ``results_dir`` are reused."""
    if seeds < 2:
        raise ConfigError("--seeds must be >= 2 for a baseline", hint="the tolerance needs a std")
    with tempfile.TemporaryDirectory(prefix="atss-check-") as tmp:
        store = Path(results_dir or tmp)
        experiments, by_run = _train(recipe_path, profile, seeds, store, train_fn, overrides,
                                     jobs=jobs)
    rows: dict[str, dict[str, Any]] = {}
    for exp in experiments:
        result = by_run.get(exp.run_id, {})
        ap, ap50 = _finite_metric(result, "AP"), _finite_metric(result, "AP50")
        if ap is None or ap50 is None:
            raise TrainingError(f"baseline run {exp.row_id} seed {exp.seed} ({exp.run_id}) has "
                                f"no finite AP/AP50: {result.get('reason') or 'no result'}")
        row = rows.setdefault(exp.row_id, {"label": exp.label, "AP": [], "AP50": [], "run_ids": []})
        row["AP"].append(ap)
        row["AP50"].append(ap50)
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
    rd.atomic_write_json(baseline_path, baseline)
    return baseline


def _display_path(path: Path) -> str:
    """Repository-relative where possible, so a baseline names no machine's folders."""
    try:
        return str(Path(path).resolve().relative_to(BUILTIN_RECIPES.parent))
    except ValueError:
        return str(path)


def load_baseline(path: Path) -> Baseline:
    """The baseline file, validated; ``ConfigError`` (one line) when missing or malformed."""
    regenerate = "regenerate it with `atss-bench check --update-baseline`"
    if not path.is_file():
        raise ConfigError(f"{path}: baseline not found",
                          hint="create it with `atss-bench check --update-baseline`")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BASELINE_BYTES + 1)
        if len(data) > MAX_BASELINE_BYTES:
            raise ValueError(f"larger than {MAX_BASELINE_BYTES} bytes")
        return Baseline.model_validate(json.loads(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise ConfigError(f"{path}: not a valid baseline ({where}: {first['msg']})",
                          hint=regenerate) from None
    except (OSError, ValueError, RecursionError) as exc:  # JSON syntax/encoding, too deep/large
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not a valid baseline ({reason})", hint=regenerate) from None


def regenerate_command(baseline: Baseline, recipe_path: Path, baseline_path: Path) -> str:
    """The command that rebuilds ``baseline`` from the store its profile's reproduction uses."""
    parts = ["atss-bench check --update-baseline", f"--seeds {max(baseline.seeds, 2)}",
             f"--results results/{baseline.profile}"]
    if baseline.profile != "mini":
        parts.append(f"--profile {baseline.profile}")
    if Path(recipe_path).resolve() != DEFAULT_RECIPE.resolve():
        parts.append(f"--recipe {recipe_path}")
    if Path(baseline_path).resolve() != DEFAULT_BASELINE.resolve():
        parts.append(f"--baseline {baseline_path}")
    return " ".join(parts)


def stale_rows(baseline: Baseline, recipe_path: Path) -> list[str]:
    """Why the baseline's run ids differ from the recipe's now, one phrase per row (empty: ok)."""
    experiments = load_recipe(recipe_path).experiments(
        profile=baseline.profile, seeds=baseline.seeds, overrides=baseline.overrides or None)
    expected: dict[str, list[str]] = {}
    for exp in experiments:
        expected.setdefault(exp.row_id, []).append(exp.run_id)
    problems = [f"row {_printable(rid)} is not in the recipe"
                for rid in baseline.rows if rid not in expected]
    for row_id, ids in expected.items():
        row = baseline.rows.get(row_id)
        if row is None:
            problems.append(f"row {row_id} has no baseline")
        elif row.run_ids is None:
            problems.append(f"row {row_id} records no run ids")
        elif row.run_ids != ids:
            problems.append(f"row {row_id} was made from runs {_printable(','.join(row.run_ids))}"
                            f", the recipe now gives {','.join(ids)}")
    return problems


def _printable(text: str, limit: int = 60) -> str:
    """Text from the baseline file on one line: control characters shown as ``?``, shortened."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def verify_baseline(baseline: Baseline, recipe_path: Path, baseline_path: Path) -> None:
    """Raise ``StaleBaselineError`` when the baseline's run ids no longer match the recipe."""
    problems = stale_rows(baseline, recipe_path)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StaleBaselineError(
            f"{baseline_path}: stale baseline for {recipe_path} (profile {baseline.profile}): "
            f"{problems[0]}{more}",
            hint=f"regenerate it: {regenerate_command(baseline, recipe_path, baseline_path)}")


def run_check(recipe_path: Path = DEFAULT_RECIPE, baseline_path: Path = DEFAULT_BASELINE, *,
              results_dir: Path | None = None, train_fn: TrainFn | str | None = None,
              rows: list[str] | None = None, jobs: int = 1) -> list[CheckRow]:
    """Check the baseline is current, then train seed 0 of every row (``jobs`` at a time) in a
    private temporary store, or reuse the runs done in ``results_dir`` and compare each AP."""
    baseline = load_baseline(baseline_path)
    verify_baseline(baseline, recipe_path, baseline_path)
    with tempfile.TemporaryDirectory(prefix="atss-check-") as tmp:
        store = Path(results_dir or tmp)
        experiments, by_run = _train(recipe_path, baseline.profile, 1, store, train_fn,
                                     baseline.overrides or None, rows=rows, jobs=jobs)
    checked = []
    for exp in experiments:
        expected = baseline.rows[exp.row_id]  # present: verify_baseline matched every row
        result = by_run.get(exp.run_id, {})
        now = _finite_metric(result, "AP")
        reason = result.get("reason") or ("" if now is not None else "no finite AP")
        checked.append(CheckRow(exp.row_id, exp.label, expected.AP_mean, now,
                                baseline.tolerance_AP, reason))
    return checked
