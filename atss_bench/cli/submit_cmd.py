"""`atss-bench submit`: a recipe's unfinished runs as one SLURM job array (or local/debug jobs)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from atss_bench.cli.app import app, console, err_console, shown
from atss_bench.cli.recipes_cmd import parse_sets, split_rows
from atss_bench.job import failure_reason
from atss_bench.job import rundir as rd
from atss_bench.job.provenance import tracked_store_warning
from atss_bench.launch import (
    JobState,
    Submission,
    SubmissionPlan,
    plan_submission,
    resolve_settings,
    run_debug_jobs,
    submit_plan,
    watch_runs,
)
from atss_bench.launch.executors import executor_parameters, job_folder
from atss_bench.launch.resources import TimeEstimate, paper_scale_settings
from atss_bench.launch.settings import FIELDS
from atss_bench.recipes import load_recipe
from atss_bench.store import printable, resolve_results_dir

RESULTS_HELP = "Results folder (default: $ATSS_BENCH_RESULTS, else ./results)."
DEFAULTS_HELP = "the cluster table of ~/.config/atss-bench/config.toml or $ATSS_BENCH_CONFIG"
STATE_STYLE = {"done": "green", "failed": "red", "cancelled": "red", "timed-out": "red",
               "running": "cyan", "pending": "yellow"}


def _styled(state: str) -> str:
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/]" if style else escape(state)



def _print(text: str) -> None:
    console.print(text, highlight=False)


# --- dry run -----------------------------------------------------------------------------------

def _print_dry_run(plan: SubmissionPlan, sources: dict[str, str],
                   estimate: TimeEstimate | None = None) -> None:
    settings, todo = plan.settings, plan.to_submit
    _print(f"[bold]dry run[/]: nothing is submitted ({settings.cluster}, "
           f"{len(todo)} of {len(plan.tasks)} distinct runs to submit)")
    _print("settings:")
    for name in FIELDS:
        value = getattr(settings, name)
        if value is None or value == [] or name == "cluster":
            continue
        where = sources.get(name, "default")
        console.print(f"  {name} = {value!r}  ({where})", highlight=False, markup=False)
    if estimate is not None:
        console.print(f"time estimate: {estimate.describe()}", highlight=False, markup=False)
    if settings.cluster == "slurm":
        shape = f"job array of {len(todo)} tasks" if len(todo) > 1 else "one job"
        _print(f"sbatch script ({shape}), exactly as it would be submitted:")
        console.print(plan.sbatch_script().rstrip("\n"), highlight=False, markup=False,
                      soft_wrap=True)
        _print("(end of sbatch script)")
    else:
        params = executor_parameters(settings, plan.name)
        _print(f"{settings.cluster} executor parameters: {escape(repr(params))}")
    _print("tasks:")
    index = 0
    for task in plan.tasks:
        exp = task.experiment
        slot = str(index) if task.will_submit else "-"
        index += task.will_submit
        console.print(f"  {slot:>3}  {task.action:<7} {exp.row_id} seed {exp.seed} "
                      f"[{exp.run_id}]  {task.detail}", highlight=False, markup=False)


# --- submission --------------------------------------------------------------------------------

def _print_submission(submission: Submission) -> None:
    plan = submission.plan
    where = plan.settings.cluster
    what = (f"job array {submission.array_id} ({len(submission.runs)} tasks)"
            if where == "slurm" and submission.array_id and len(submission.job_ids) > 1
            else f"{len(submission.job_ids)} job(s)")
    _print(f"submitted {len(submission.runs)} runs to {where} as {what} "
           f"in {submission.seconds:.1f}s")
    for run in submission.runs:
        exp = run.experiment
        console.print(f"  job {run.job_id}  {exp.row_id} seed {exp.seed} [{exp.run_id}]",
                      highlight=False, markup=False)
    _print_skipped(plan)
    console.print(f"job ids: {' '.join(submission.job_ids)}", highlight=False, markup=False)
    if submission.runs:
        folder = Path(submission.runs[0].stdout or ".").parent.parent
        console.print(f"logs: {folder}/<job id>/", highlight=False, markup=False)


def _print_skipped(plan: SubmissionPlan) -> None:
    for task in plan.tasks:
        if not task.will_submit:
            exp = task.experiment
            console.print(f"  {task.action}: {exp.row_id} seed {exp.seed} [{exp.run_id}] "
                          f"{task.detail}", highlight=False, markup=False)


def _progress(results_dir: Path, run_id: str) -> str:
    run_dir = rd.run_dir_for(results_dir, run_id)
    last = (rd.read_done_metrics(run_dir) or {}).get("provenance") \
        or rd.read_last_log_line(run_dir / rd.LOG) or {}
    it, total = last.get("iter"), last.get("max_iter")
    return f"{it}/{total}" if isinstance(it, int) and isinstance(total, int) else "-"


def _result_text(results_dir: Path, job: JobState) -> str:
    if job.state == rd.DONE:
        stored = rd.read_done_metrics(rd.run_dir_for(results_dir, job.run_id)) or {}
        ap = (stored.get("metrics") or {}).get("AP")
        return f"AP {ap:.1f}" if isinstance(ap, (int, float)) else ""
    return job.reason or job.error_line or ""


def job_table(results_dir: Path, jobs: Sequence[JobState], title: str = "jobs") -> Table:
    table = Table(title=title)
    for column in ("job", "row", "seed", "run_id", "state", "scheduler", "progress", "result"):
        table.add_column(column, no_wrap=column in ("job", "run_id", "state"))
    for job in jobs:
        table.add_row(job.job_id, shown(job.row_id), str(job.seed), shown(job.run_id),
                      _styled(job.state), shown(job.scheduler_state or "-"),
                      _progress(results_dir, job.run_id), shown(_result_text(results_dir, job)))
    return table


def print_job_states(jobs: Sequence[JobState]) -> None:
    """Under `atss-bench status`: every submitted run that is not done, its job and logs."""
    unfinished = [job for job in jobs if job.state != rd.DONE]
    if unfinished:
        _print("[bold]jobs[/] (submitted runs not done):")
    for job in unfinished:  # record text is data: escaped, shown literally
        scheduler = f" ({job.scheduler_state})" if job.scheduler_state else ""
        if job.unreachable:
            scheduler = " (scheduler unreachable: squeue and sacct failed; may still be queued)"
        console.print(f"{_styled(job.state)} {shown(f'{job.row_id} [{job.run_id}]')}: "
                      f"{shown(f'{job.cluster} job {job.job_id}{scheduler}')}", highlight=False)
        if job.state not in (rd.PENDING, rd.RUNNING) and job.error_line:
            console.print(f"  error: {printable(job.error_line)}", highlight=False, markup=False)
        if job.stdout or job.stderr:  # from the store layout, never the paths a record names
            console.print(f"  stdout: {job.stdout}  stderr: {job.stderr}", highlight=False,
                          markup=False)


def _wait(results_dir: Path, run_ids: Sequence[str], poll_s: float,
          local_jobs: Sequence[Any] = ()) -> list[JobState]:
    """The live table until every run is finished; the final snapshot."""
    states: list[JobState] = []
    with Live(console=console, refresh_per_second=1, transient=False) as live:
        for states in watch_runs(results_dir, run_ids, interval_s=poll_s, jobs=local_jobs):
            done = sum(s.state == rd.DONE for s in states)
            live.update(job_table(results_dir, states,
                                  title=f"{done}/{len(run_ids)} done in {results_dir}"))
    return states


def _finish(results_dir: Path, run_ids: Sequence[str], states: Sequence[JobState]) -> None:
    """Exit 1 unless every waited-for run is done (a run without a job record, e.g. trained by
    `atss-bench run` elsewhere, is judged by its status.json)."""
    bad = [s for s in states if s.state != rd.DONE]
    for s in bad:
        err_console.print(f"[red]{s.state}[/] {escape(f'{s.row_id} [{s.run_id}]')} job "
                          f"{s.job_id}: {escape(s.reason or s.error_line or '')}",
                          highlight=False)
    seen = {s.run_id for s in states}
    unrecorded = 0
    for run_id in (r for r in run_ids if r not in seen):
        status = rd.read_json(rd.run_dir_for(results_dir, run_id) / rd.STATUS) or {}
        if status.get("state") != rd.DONE:
            unrecorded += 1
            state, reason = str(status.get("state") or "not run"), str(status.get("reason") or "")
            err_console.print(f"[red]{escape(state)}[/] {escape(run_id)}: {escape(reason)}",
                              highlight=False)
    if bad or unrecorded:
        raise typer.Exit(1)


def warn_tracked_store(results_dir: Path) -> None:
    """One yellow line when these records will not be rebuildable from a commit alone."""
    line = tracked_store_warning(results_dir)
    if line:
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)


SUBMIT_EXIT_CODES = (
    "Exit codes: 0 when the runs were submitted (with --wait: when every run asked for is done); "
    "1 when a run failed, was cancelled or timed out (--wait and --cluster debug follow the "
    "runs); 2 on bad input (recipe, flags, settings) or a failed submission.")


@app.command("submit", epilog=SUBMIT_EXIT_CODES)
def submit_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/table2.yaml."),
    cluster: Optional[str] = typer.Option(
        None, "--cluster", help=f"slurm | local | debug (default: {DEFAULTS_HELP}, else slurm)."),
    profile: str = typer.Option("full", "--profile", "-p", help="Profile name or YAML path."),
    rows: Optional[str] = typer.Option(None, "--rows", help="Row id(s), comma separated."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per row."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="Override: key=value."),
    results: Optional[Path] = typer.Option(None, "--results", help=RESULTS_HELP),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder."),
    partition: Optional[str] = typer.Option(None, "--partition", help="SLURM partition."),
    gpus_per_node: Optional[int] = typer.Option(
        None, "--gpus-per-node", min=0,
        help="GPUs per node; one process per GPU (DDP). Default 0; COCO-scale runs on SLURM: 8, "
             "the paper's."),
    nodes: Optional[int] = typer.Option(None, "--nodes", min=1, help="Nodes per run."),
    cpus_per_task: Optional[int] = typer.Option(None, "--cpus-per-task", min=1),
    mem_gb: Optional[float] = typer.Option(None, "--mem-gb", min=0.001, help="Memory per node."),
    time_min: Optional[int] = typer.Option(
        None, "--time", min=1,
        help="Minutes per attempt (time-outs requeue). Default 720; COCO-scale runs on SLURM: "
             "estimated from the schedule (--dry-run shows it)."),
    account: Optional[str] = typer.Option(None, "--account"),
    qos: Optional[str] = typer.Option(None, "--qos"),
    constraint: Optional[str] = typer.Option(None, "--constraint"),
    array_parallelism: Optional[int] = typer.Option(
        None, "--array-parallelism", min=1,
        help="Runs at a time (slurm: array %N; local: background processes, default 1)."),
    force_cpu: bool = typer.Option(
        False, "--force-cpu", help="Submit COCO-scale runs to SLURM without GPUs all the same (no --gpus-per-node: 0)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the whole sbatch script and the tasks; submit nothing."),
    wait: bool = typer.Option(False, "--wait", help="Block with a live table until all finish."),
    poll: float = typer.Option(5.0, "--poll", min=0.1, help="Seconds between --wait updates."),
) -> None:
    """Submit a recipe's unfinished runs as one job array (one task per run) and return."""
    flags: dict[str, Any] = {
        "cluster": cluster, "partition": partition, "gpus_per_node": gpus_per_node,
        "nodes": nodes, "cpus_per_task": cpus_per_task, "mem_gb": mem_gb, "time": time_min,
        "account": account, "qos": qos, "constraint": constraint,
        "array_parallelism": array_parallelism,
    }
    settings, sources = resolve_settings(flags)
    experiments = load_recipe(recipe).experiments(profile=profile, seeds=seeds,
                                                  rows=split_rows(rows), overrides=parse_sets(sets))
    settings, sources, estimate = paper_scale_settings(settings, sources, experiments,
                                                       force_cpu=force_cpu)
    results_dir = resolve_results_dir(results).absolute()
    job_folder(results_dir, settings)  # a folder no job script can name fails before any write
    plan = plan_submission(results_dir, experiments, settings, data_root=data_root,
                           record=not dry_run)
    if dry_run:
        _print_dry_run(plan, sources, estimate)
        return
    if not plan.to_submit:
        _print(f"nothing to submit: {len(plan.tasks)} runs are done, busy or already queued")
        _print_skipped(plan)
        followed = [t.experiment.run_id for t in plan.tasks if t.action in ("queued", "busy")]
        if wait and followed:  # follow earlier submissions' jobs and runs trained elsewhere
            _finish(results_dir, followed, _wait(results_dir, followed, poll))
        return
    warn_tracked_store(results_dir)
    submission = submit_plan(plan)
    _print_submission(submission)
    if settings.cluster == "debug":
        _run_debug(submission)
        return
    follow = " ".join(["atss-bench status", str(recipe), "--profile", profile,
                       *(f"--set {item}" for item in sets or []),
                       *(["--results", str(results)] if results is not None else [])])
    if not wait:
        _print(f"follow with: {escape(follow)}")
        return
    local_jobs = submission.jobs if settings.cluster == "local" else ()
    followed = [run.experiment.run_id for run in submission.runs]
    followed += [t.experiment.run_id for t in plan.tasks if t.action in ("queued", "busy")]
    _finish(results_dir, followed, _wait(results_dir, followed, poll, local_jobs))


def _run_debug(submission: Submission) -> None:
    failed = 0
    for run, exc in run_debug_jobs(submission):
        exp = run.experiment
        failed += exc is not None
        text = "[green]done[/]" if exc is None else \
            f"[red]failed[/] ({escape(failure_reason(exc))})"
        _print(f"{text} {escape(exp.row_id)} seed {exp.seed} {escape(f'[{exp.run_id}]')}")
    if failed:
        raise typer.Exit(1)
