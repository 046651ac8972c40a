"""`atss-bench run`, `atss-bench status` and `atss-bench results export`."""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atss_bench.cli.app import app, console, err_console, shown
from atss_bench.cli.recipes_cmd import parse_sets, split_rows
from atss_bench.cli.submit_cmd import print_job_states, warn_tracked_store
from atss_bench.devices import resolved_device, use_device
from atss_bench.job import (PlannedRun, RunOutcome, plan_runs, refuse_conflicts,
                            resolve_train_fn, run_planned)
from atss_bench.job import rundir as rd
from atss_bench.job.runner import RETRAIN_DIR
from atss_bench.launch import refresh_job_states
from atss_bench.recipes import load_recipe
from atss_bench.report.summary import MAX_SEED_SCAN, seed_run_ids
from atss_bench.store import (EXPORT_FORMATS, export_results, printable, resolve_results_dir,
                              scan_results, select_dataset)

RESULTS_HELP = "Results folder (default: $ATSS_BENCH_RESULTS, else ./results)."
DEVICE_HELP = ("auto: CUDA when torch sees a GPU, else CPU; cpu: on any machine (exactly "
               "reproducible; the committed records are CPU runs); cuda: a GPU or exit 2. "
               "Default: $ATSS_BENCH_DEVICE, else auto.")
DATASET_HELP = "Only runs made on this dataset: a fingerprint (or its first characters) or a name."
STATE_STYLE = {"done": "green", "failed": "red", "running": "cyan", "pending": "yellow",
               "not run": "dim", "busy": "cyan", "skip": "dim", "conflict": "red"}


def _styled(state: str) -> str:
    style = STATE_STYLE.get(state.split(" ")[0], "")
    return f"[{style}]{escape(state)}[/]" if style else escape(state)


# --- run ---------------------------------------------------------------------------------------

class _LogWatcher(threading.Thread):
    """Follows a run's log.jsonl and moves its progress bar (the engine itself prints nothing)."""

    def __init__(self, progress: Progress, task: Any, log_path: Path) -> None:
        super().__init__(daemon=True)
        self.progress, self.task, self.log_path = progress, task, log_path
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            last = rd.read_last_log_line(self.log_path, keys=("iter", "max_iter")) or {}
            if isinstance(last.get("iter"), int) and isinstance(last.get("max_iter"), int):
                self.progress.update(self.task, completed=last["iter"], total=last["max_iter"])


def _print_plan(plan: list[PlannedRun]) -> None:
    table = Table(title="dry run: nothing is trained")
    for column in ("row", "seed", "run_id", "action", "detail"):
        table.add_column(column, no_wrap=column == "run_id")
    for item in plan:
        exp = item.experiment
        table.add_row(exp.row_id, str(exp.seed), exp.run_id, _styled(item.action),
                      escape(item.detail))
    console.print(table)
    todo = sum(item.will_train for item in plan)
    console.print(f"{todo} to train, {len(plan) - todo} skipped ({len(plan)} distinct runs)")


def _run_with_progress(results_dir: Path, plan: list[PlannedRun], train_fn: Any,
                       data_root: str | None, jobs: int = 1) -> list[RunOutcome]:
    """An overall bar plus one bar per run in flight, each following its run's log."""
    todo = [item for item in plan if item.will_train]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("rows", total=len(todo))
        active: dict[str, tuple[Any, _LogWatcher]] = {}  # run_id -> (bar, its log watcher)

        def on_start(item: PlannedRun) -> None:
            exp = item.experiment
            bar = progress.add_task(escape(f"{exp.row_id} seed {exp.seed} [{exp.run_id}]"),
                                    total=None)
            run_dir = rd.run_dir_for(results_dir, exp.run_id)
            if item.action == "rerun" and item.ap is not None:  # a done run retrains beside it
                run_dir = run_dir / RETRAIN_DIR
            watcher = _LogWatcher(progress, bar, run_dir / rd.LOG)
            active[exp.run_id] = (bar, watcher)
            watcher.start()

        def on_finish(outcome: RunOutcome) -> None:
            exp = outcome.experiment
            bar, watcher = active.pop(exp.run_id)
            watcher.stop.set()
            watcher.join()
            progress.remove_task(bar)
            progress.advance(overall)
            text = (f"AP {outcome.metrics['AP']:.1f}" if outcome.state == "done"
                    else outcome.reason)
            progress.console.print(f"{_styled(outcome.state)} {escape(exp.row_id)} seed {exp.seed}"
                                   f" {escape(f'[{exp.run_id}]')} {escape(text)}", highlight=False)

        return run_planned(results_dir, plan, train_fn=train_fn, data_root=data_root,
                           on_start=on_start, on_finish=on_finish, jobs=jobs)


def _print_summary(plan: list[PlannedRun], outcomes: list[RunOutcome]) -> None:
    by_id = {o.experiment.run_id: o for o in outcomes}
    table = Table(title="summary")
    for column in ("row", "seed", "run_id", "state", "AP", "time", "reason"):
        table.add_column(column, no_wrap=column in ("run_id", "state"))
    for item in plan:
        exp, outcome = item.experiment, by_id.get(item.experiment.run_id)
        if outcome is None:
            state: str = item.action
            seconds = "-"
            reason = "already done" if item.action == "skip" else item.detail
            ap = f"{item.ap:.1f}" if item.ap is not None else "-"
        else:
            state, seconds, reason = outcome.state, f"{outcome.seconds:.1f}s", outcome.reason
            ap = f"{outcome.metrics['AP']:.1f}" if "AP" in outcome.metrics else "-"
        table.add_row(exp.row_id, str(exp.seed), exp.run_id, _styled(state), escape(ap), seconds,
                      escape(reason))
    console.print(table)


RUN_EXIT_CODES = (
    "Exit codes: 0 when every run asked for is done (trained now or before); 1 when a run failed "
    "(a failed --force retrain included: the previous result is kept) or is being trained by "
    "another process; 2 on bad input (recipe, profile, --set, flags, store) before any training.")


def _exit_code(plan: list[PlannedRun], outcomes: list[RunOutcome], recipe: Path) -> int:
    """1 when a run asked for failed or is busy (printed), else 0."""
    failed = [o for o in outcomes if o.state == "failed"]
    busy = [o.experiment for o in outcomes if o.state == "busy"]  # taken after planning
    busy += [item.experiment for item in plan if item.action == "busy"]  # never trained here
    if failed:
        err_console.print(f"[red]{len(failed)} of {len(plan)} runs failed[/] (see "
                          f"`atss-bench status {escape(str(recipe))}`)")
    if busy:
        err_console.print(f"[yellow]{len(busy)} of {len(plan)} runs are being trained by another "
                          "process[/] (not waited for: run again when they end)")
    return 1 if failed or busy else 0


@app.command("run", epilog=RUN_EXIT_CODES)
def run_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/table2.yaml."),
    profile: str = typer.Option("full", "--profile", "-p", help="Profile name or YAML path."),
    rows: Optional[str] = typer.Option(None, "--rows", help="Row id(s), comma separated."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per row."),
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    force: bool = typer.Option(False, "--force", help="Retrain finished runs from scratch."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would run or be skipped."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="Override: key=value."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1,
                             help="Runs trained at once, each with an equal share of the cores."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
) -> None:
    """Train a recipe's rows here (--jobs N: N at a time); finished runs are skipped."""
    if device is not None:
        use_device(device)  # before anything: a bad choice is exit 2 with nothing planned
    experiments = load_recipe(recipe).experiments(profile=profile, seeds=seeds,
                                                  rows=split_rows(rows), overrides=parse_sets(sets))
    results_dir = resolve_results_dir(results)
    plan = plan_runs(results_dir, experiments, force=force, data_root=data_root,
                     device=resolved_device())
    if dry_run:
        _print_plan(plan)
        return
    refuse_conflicts(plan)  # a stored run of another dataset or device: exit 2 before training
    if not any(item.will_train for item in plan):
        console.print(f"nothing to train: {len(plan)} runs already done or running"
                      f" in {results_dir}")
        _print_summary(plan, [])
        raise typer.Exit(_exit_code(plan, [], recipe))
    train_fn = resolve_train_fn(None)  # a missing engine is one line + exit 2, before any run
    warn_tracked_store(results_dir)
    outcomes = _run_with_progress(results_dir, plan, train_fn, data_root, jobs)
    _print_summary(plan, outcomes)
    raise typer.Exit(_exit_code(plan, outcomes, recipe))


# --- status ------------------------------------------------------------------------------------

def _value(record: dict[str, Any], key: str) -> Any:
    """A record field, None for missing / NaN / NaT."""
    value = record.get(key)
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def _age(record: dict[str, Any], now: datetime) -> str:
    stamp = next((_value(record, k) for k in ("finished", "started", "created")
                  if _value(record, k) is not None), None)
    if stamp is None:
        return "-"
    seconds = max(0.0, (now - stamp).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _progress_text(record: dict[str, Any]) -> str:
    it, total = _value(record, "iter"), _value(record, "max_iter")
    if it is None or total is None:
        return "-"
    return f"{int(it)}/{int(total)}"


def _recipe_records(frame: pd.DataFrame, recipe_path: Path, profile: str,
                    overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """The recipe's rows (all seeds found in the store; seed offset 0 even if never run)."""
    recipe = load_recipe(recipe_path)
    by_id = {r["run_id"]: r for r in frame.to_dict("records")} if not frame.empty else {}
    out = []
    for row_id, run_ids in seed_run_ids(recipe, profile, MAX_SEED_SCAN, overrides).items():
        for offset, run_id in enumerate(run_ids):
            record = by_id.get(run_id)
            if record is not None:
                out.append({**record, "row_id": row_id})
            elif offset == 0:
                out.append({"run_id": run_id, "row_id": row_id, "status": "not run",
                            "table": recipe.table})
    return out



def _print_warning(line: str) -> None:
    """A skipped record: one line; record text is data, shown literally, never as markup."""
    err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)


@app.command("status")
def status_command(
    recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML (default: every run)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p",
                                          help="Profile (with RECIPE default: full)."),
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    sets: Optional[list[str]] = typer.Option(None, "--set",
                                             help="With RECIPE: the runs' overrides, key=value."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP),
) -> None:
    """What ran, what runs, what failed and why."""
    results_dir = resolve_results_dir(results)
    jobs = refresh_job_states(results_dir)  # SLURM / local job states into the store first
    scan = scan_results(results_dir)
    for line in scan.warnings:
        _print_warning(line)
    selected = select_dataset(scan.frame, dataset)
    if recipe is not None:
        records = _recipe_records(selected, recipe, profile or "full", parse_sets(sets))
    else:
        frame = selected if profile is None else selected[selected["profile"] == profile]
        records = frame.sort_values(["table", "row_id", "seed"], key=lambda c: c.astype(str)
                                    ).to_dict("records")
    if not records:
        which = f" made on dataset {dataset!r}" if dataset is not None else ""
        console.print(f"no runs{which} in {results_dir}", markup=False, highlight=False)
        return
    now = datetime.now(timezone.utc)
    table = Table(title=f"runs in {results_dir}")
    for column in ("table", "row", "seed", "run_id", "state", "progress", "AP", "age"):
        table.add_column(column, no_wrap=column in ("run_id", "state", "progress"))
    for r in records:
        ap, seed = _value(r, "AP"), _value(r, "seed")
        table.add_row(shown(_value(r, "table") or ""), shown(r["row_id"]),
                      "-" if seed is None else str(seed), shown(r["run_id"]),
                      _styled(r["status"]), _progress_text(r),
                      "-" if ap is None else f"{ap:.1f}", _age(r, now))
    console.print(table)
    for r in records:
        reason = _value(r, "reason") or ""
        if r["status"] in ("failed", "timed-out", "cancelled") or reason.startswith("stale"):
            run_dir = Path(r["run_dir"])
            what = shown(f"{r['row_id']} [{r['run_id']}]: {reason or 'no reason recorded'}")
            console.print(f"[red]{r['status']}[/] {what}", highlight=False)
            console.print(f"  log: {printable(str(run_dir / rd.LOG), 1000)}  traceback: "
                          f"{printable(str(run_dir / rd.ERROR), 1000)}", highlight=False,
                          markup=False)
        elif retrain := _value(r, "retrain_failed"):
            what = shown(f"{r['row_id']} [{r['run_id']}]: {retrain}")
            console.print(f"[yellow]retrain failed[/] {what} (the previous result is kept; see "
                          f"{shown(str(Path(r['run_dir']) / RETRAIN_DIR / rd.ERROR))})",
                          highlight=False)
    listed = {r["run_id"] for r in records}
    print_job_states([job for job in jobs if job.run_id in listed])  # job ids, logs, errors


# --- results export ----------------------------------------------------------------------------

results_app = typer.Typer(help="The results table (one row per run).", no_args_is_help=True)
app.add_typer(results_app, name="results")


@results_app.command("export")
def export_command(
    fmt: str = typer.Option("csv", "--format", help=" | ".join(EXPORT_FORMATS)),
    out: Optional[Path] = typer.Option(None, "--out", help="File (default: RESULTS/results.FMT)."),
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP),
) -> None:
    """Write every run (metrics, state, provenance, dataset) as CSV or Parquet."""
    path = export_results(resolve_results_dir(results), fmt, out, dataset=dataset,
                          warn=_print_warning)
    console.print(f"wrote {path}", highlight=False, markup=False)
