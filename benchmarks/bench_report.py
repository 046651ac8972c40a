"""How long `report --all` takes on a store of 10,000 runs (target: under 5 s).

Builds a synthetic store in a temp dir: every row of Tables 1-8 for profiles full and mini with
3 seeds (the runs the report reads), plus filler runs up to N (85% done, 5% failed, 5% running
with a log, 5% pending). Times, best of --repeat (warm page cache):

  reference   a bare loop reading meta/status/metrics JSON of every run (the floor for any loader)
  load        store.load_results
  library     load_results + report.build_report for all tables (Markdown + 3 sweep plots)
  cli         `atss-bench report --all` in a fresh interpreter (imports included)

    python benchmarks/bench_report.py [--runs 10000] [--repeat 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS, load_recipe
from atss_bench.report import build_report, paper_table_recipes
from atss_bench.store import load_results

TARGET_S = 5.0
STATES = ["done"] * 17 + ["failed", "running", "pending"]


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1))  # plain writes: building is not what we time


def write_run(results: Path, run_id: str, meta: dict, state: str, rng: random.Random) -> None:
    run_dir = rd.run_dir_for(results, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write(run_dir / rd.META, {"run_id": run_id, **meta, "created": "2026-01-01T00:00:00+00:00"})
    status = {"state": state, "reason": None, "started": "2026-01-01T00:01:00+00:00",
              "host": "node1", "pid": 1, "slurm_job_id": None}
    if state == "failed":
        status["reason"] = "TrainingError: non-finite loss at iter 812"
    if state == "done":
        status["finished"] = "2026-01-01T02:01:00+00:00"
        ap = rng.uniform(15, 40)
        _write(run_dir / rd.METRICS, {
            "run_id": run_id, "metrics": {m: ap + i for i, m in enumerate(METRICS)},
            "provenance": {"git_commit": "0123456789abcdef0123456789abcdef01234567",
                           "git_dirty": False, "device": "cuda", "world_size": 8,
                           "config_hash": run_id, "wall_time": 7200.0, "iter": 90000,
                           "max_iter": 90000, "versions": {"python": "3.11", "torch": "2.x"}}})
    if state == "running":
        with open(run_dir / rd.LOG, "w") as log:
            log.writelines(json.dumps({"iter": i, "max_iter": 90000, "loss": 1.0, "lr": 0.01})
                          + "\n" for i in range(0, 5000, 20))
    _write(run_dir / rd.STATUS, status)


def build_store(results: Path, runs: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    count = 0
    for path in paper_table_recipes():
        recipe = load_recipe(path)
        for profile in ("full", "mini"):
            for exp in recipe.experiments(profile, seeds=3):
                if rd.run_dir_for(results, exp.run_id).exists():
                    continue  # shared between tables
                meta = {"recipe": exp.recipe, "table": exp.table, "row_id": exp.row_id,
                        "label": exp.label, "profile": profile, "seed": exp.seed}
                write_run(results, exp.run_id, meta, rng.choice(STATES), rng)
                count += 1
    for i in range(runs - count):
        meta = {"recipe": "sweep.yaml", "table": "sweep", "row_id": f"r{i % 500}",
                "label": f"filler {i}", "profile": "mini", "seed": i // 500}
        write_run(results, f"{rng.getrandbits(48):012x}", meta, rng.choice(STATES), rng)
    return len(os.listdir(results / rd.RUNS))


def reference_loop(results: Path) -> int:
    """The floor: read and parse the same JSON files, no DataFrame, no checks."""
    rows = 0
    runs = results / rd.RUNS
    for name in os.listdir(runs):
        for file in (rd.META, rd.STATUS, rd.METRICS):
            try:
                with open(runs / name / file, "rb") as handle:
                    json.loads(handle.read())
            except FileNotFoundError:
                pass
        rows += 1
    return rows


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def library_report(results: Path, out_dir: Path) -> str:
    frame = load_results(results)
    recipes = [load_recipe(p) for p in paper_table_recipes()]
    return build_report(recipes, frame, "mini", plot_dir=out_dir, link_base=out_dir).markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="build the store here, keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="atss_bench_report_"))
    results = root / "results"
    try:
        start = time.perf_counter()
        n = build_store(results, args.runs)
        print(f"store: {n} runs in {results} (built in {time.perf_counter() - start:.1f} s)")
        t_ref, rows = best_of(args.repeat, lambda: reference_loop(results))
        t_load, frame = best_of(args.repeat, lambda: load_results(results))
        assert rows == n and len(frame) == n, (rows, len(frame))
        t_lib, text = best_of(args.repeat, lambda: library_report(results, root / "lib"))
        assert str(text).count("## Table ") == 8
        cli = [sys.executable, "-m", "atss_bench.cli.main", "report", "--all", "--profile", "mini",
               "--results", str(results), "--out", str(root / "cli" / "report.md")]
        t_cli, _ = best_of(args.repeat, lambda: subprocess.run(cli, check=True,
                                                               capture_output=True))
        print(f"reference loop (bare JSON reads)  {t_ref:6.2f} s")
        print(f"store.load_results                {t_load:6.2f} s  "
              f"({t_load / t_ref:.1f}x reference)")
        print(f"library report --all              {t_lib:6.2f} s  ({t_lib / t_ref:.1f}x reference)")
        print(f"CLI report --all (new process)    {t_cli:6.2f} s  ({t_cli / t_ref:.1f}x reference)")
        worst = max(t_lib, t_cli)
        verdict = "OK" if worst <= TARGET_S else "SLOWER THAN TARGET"
        print(f"target {TARGET_S:.0f} s: {verdict} "
              f"(worst {worst:.2f} s = {worst / TARGET_S:.0%} of it)")
        if worst > TARGET_S:
            sys.exit(1)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
