"""The training loop's time per iteration against the bare model step, same batches, same run.

    python benchmarks/bench_loop.py [--recipe recipes/ci.yaml] [--row retinanet_atss]
                                    [--profile mini] [--iters 60] [--chunk 10] [--warmup 3]
                                    [--clock wall|cpu] [--cli-bars]

A mini row as the engine trains it: the recipe row's config, its dataset and loader
(``data.num_workers`` workers, aspect-ratio grouping, multi-scale), ``engine.train.train_loop``
with its log.jsonl, checkpoints and the thread budget of ``engine.runner``. The bare step is the
model's forward + backward + optimizer step alone on the *same* batches, loaded beforehand, so
padding and image sizes cost both sides alike: the ratio (loop / step) is what the loop adds
(loading, collation, hand-over from the worker, logging, bookkeeping). Goal: <= 1.15.

The two alternate in chunks of ``--chunk`` iterations (each on its own copy of the model), so a
neighbour's load on a shared machine hits both alike; reported are the medians of the chunks'
per-iteration times and their ratio. ``--clock cpu`` times this process's CPU time instead of
wall time (steadier on a busy machine; it leaves out the loader worker, which runs in its own
process). ``--cli-bars`` keeps the display of ``atss-bench run`` going meanwhile (its rich
progress bars and the thread that follows the run's log.jsonl), as when a row trains in the
CLI's own process (``--jobs 1``).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from atss_bench.engine.distributed import init_distributed
from atss_bench.engine.loaders import (build_train_batches, build_train_dataset,
                                       prepare_dataset_root)
from atss_bench.engine.monitor import JsonlLog
from atss_bench.engine.runner import cpu_thread_budget, seed_everything
from atss_bench.engine.solver import build_optimizer, build_scheduler
from atss_bench.engine.train import Batch, train_loop
from atss_bench.model import build_detector
from atss_bench.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "ci.yaml"))
    parser.add_argument("--row", default="retinanet_atss")
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--iters", type=int, default=60, help="timed iterations of each side")
    parser.add_argument("--chunk", type=int, default=10, help="iterations per alternation")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations of each side")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--cli-bars", action="store_true",
                        help="run the CLI's progress display meanwhile (see the module doc)")
    return parser.parse_args()


@contextmanager
def cli_bars(enabled: bool, log_path: Path, total: int) -> Iterator[None]:
    """``atss-bench run``'s display of one row: an overall bar and the row's bar, which a thread
    moves from log.jsonl (``cli.runs_cmd``)."""
    if not enabled:
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from atss_bench.cli.runs_cmd import _LogWatcher

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns) as progress:
        progress.add_task("rows", total=1)
        watcher = _LogWatcher(progress, progress.add_task("row", total=total), log_path)
        watcher.start()
        try:
            yield
        finally:
            watcher.stop.set()
            watcher.join()


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler, batch: Batch) -> None:
    images, targets = batch
    losses = model(images, targets)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()
    scheduler.step()


def main() -> None:
    args = parse_args()
    clock = CLOCKS[args.clock]
    experiments = load_recipe(args.recipe).experiments(profile=args.profile)
    matches = [e for e in experiments if e.row_id == args.row]
    if not matches:
        sys.exit(f"no row {args.row!r} in {args.recipe}")
    config = matches[0].config
    train_cfg = config.train
    dist_info = init_distributed()
    total = args.warmup + args.iters
    with cpu_thread_budget(dist_info.device, config.data.num_workers) as threads, \
            tempfile.TemporaryDirectory() as tmp:
        seed_everything(config.seed)
        root = prepare_dataset_root(config.data, None, dist_info)
        dataset = build_train_dataset(root, config.data)
        loop_model = build_detector(config.model, dataset.num_classes)
        loop_model.size_divisibility = config.data.size_divisibility
        step_model = copy.deepcopy(loop_model)
        # The bare side's batches: the same stream, loaded in this process before timing.
        in_process = config.data.model_copy(update={"num_workers": 0})
        _, stream = build_train_batches(dataset, in_process,
                                        images_per_batch=train_cfg.images_per_batch,
                                        seed=config.seed, start_iter=0, dist_info=dist_info)
        preloaded = [next(stream) for _ in range(total)]
        del stream
        _, batches = build_train_batches(dataset, config.data,
                                         images_per_batch=train_cfg.images_per_batch,
                                         seed=config.seed, start_iter=0, dist_info=dist_info)
        parts = {}
        for name, model in (("loop", loop_model), ("step", step_model)):
            optimizer = build_optimizer(model, train_cfg)
            parts[name] = (optimizer, build_scheduler(optimizer, train_cfg))
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        log = JsonlLog(Path(tmp) / "log.jsonl")
        step_model.train()

        def run_loop(start: int, stop: int) -> float:
            began = clock()
            train_loop(loop_model, *parts["loop"], scaler, batches, start_iter=start,
                       max_iter=stop, images_per_batch=train_cfg.images_per_batch,
                       dist_info=dist_info, amp=False,
                       checkpoint_period=train_cfg.checkpoint_period, log=log, progress=False)
            return (clock() - began) / (stop - start)

        def run_steps(start: int, stop: int) -> float:
            began = clock()
            for index in range(start, stop):
                bare_step(step_model, *parts["step"], preloaded[index])
            return (clock() - began) / (stop - start)

        run_loop(0, args.warmup)
        run_steps(0, args.warmup)
        loop_times, step_times = [], []
        with cli_bars(args.cli_bars, log.path, total):
            for start in range(args.warmup, total, args.chunk):
                stop = min(total, start + args.chunk)
                loop_times.append(run_loop(start, stop))
                step_times.append(run_steps(start, stop))
        batches = iter(())  # drops the loader: its worker stops here, not at exit
    loop_s, step_s = statistics.median(loop_times), statistics.median(step_times)
    print(f"{args.recipe} row {args.row}, profile {args.profile}: {threads} thread(s), "
          f"{config.data.num_workers} loader worker(s), {train_cfg.images_per_batch} images a "
          f"batch, {args.iters} timed iterations in chunks of {args.chunk}, {args.clock} clock"
          + (", CLI bars on" if args.cli_bars else ""))
    print(f"loop {loop_s:.4f} s/iter  bare step {step_s:.4f} s/iter  "
          f"ratio {loop_s / step_s:.3f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
