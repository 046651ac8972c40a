"""The training loop: one optimizer step per global batch; AMP, NaN guard, logs, checkpoints.

Iterations are counted like the log: ``iter = N`` is the state after N updates. The update made
from ``iter = N - 1`` uses the lr ``scheduler`` holds for step N - 1 (warm-up and decay exact).
A non-finite loss (mean over processes, so every process stops together) raises
``TrainingError("non-finite loss at iter N: {...}")`` *before* the update, so the weights and the
last checkpoint stay clean.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from atss_bench.engine.distributed import DistInfo, reduce_mean
from atss_bench.engine.monitor import JsonlLog, TrainProgress
from atss_bench.engine.preemption import DeferredSignals, signal_name
from atss_bench.errors import TrainingError

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]
LOG_PERIOD = 20


@dataclass
class TrainResult:
    iterations: int  # updates made by this call (0 when resumed at max_iter)
    seconds: float
    images_per_sec: float
    last_losses: dict[str, float]


def move_batch(batch: Batch, device: torch.device) -> Batch:
    """Images and the tensors the model needs (boxes, labels) onto ``device``."""
    images, targets = batch
    images = [image.to(device, non_blocking=True) for image in images]
    moved = []
    for target in targets:
        target = dict(target)
        for key in ("boxes", "labels"):
            if key in target:
                target[key] = target[key].to(device, non_blocking=True)
        moved.append(target)
    return images, moved


def check_finite(losses: dict[str, float], iteration: int) -> None:
    if not all(math.isfinite(value) for value in losses.values()):
        shown = ", ".join(f"{name}={value:.4g}" for name, value in losses.items())
        raise TrainingError(
            f"non-finite loss at iter {iteration}: {{{shown}}}",
            hint="lower train.base_lr, lengthen the warm-up, or check the data",
        )


def train_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    batches: Iterator[Batch],
    *,
    start_iter: int,
    max_iter: int,
    images_per_batch: int,
    dist_info: DistInfo,
    amp: bool,
    checkpoint_period: int,
    save_checkpoint: Callable[[int], None] | None = None,
    log: JsonlLog | None = None,
    progress: bool = False,
    log_period: int | None = None,
    signals: DeferredSignals | None = None,
    progress_label: str = "",
) -> TrainResult:
    """Train from ``start_iter`` to ``max_iter``; ``save_checkpoint(iter)`` is called on every
    process every ``checkpoint_period`` iterations and at ``max_iter`` (it writes on rank 0).
    ``log`` gets a line every ``log_period`` (default :data:`LOG_PERIOD`) iterations and at the
    end, on rank 0; so does stdout with ``progress`` off a terminal (``monitor.TrainProgress``,
    lines led by ``progress_label``). With ``signals``, a preemption signal received during an
    iteration saves a checkpoint of it before the signal is handled (``engine.preemption``)."""
    log_period = log_period or LOG_PERIOD
    device = dist_info.device
    use_amp = amp and device.type == "cuda"
    bar = TrainProgress(progress and dist_info.is_main, max_iter, start_iter,
                        label=progress_label)
    model.train()
    started = window_start = time.perf_counter()
    window_iters = 0
    losses: dict[str, float] = {}
    try:
        for step in range(start_iter, max_iter):
            iteration = step + 1
            images, targets = move_batch(next(batches), device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                loss_dict = model(images, targets)
            total = sum(loss_dict.values())
            losses = reduce_mean({"loss": total, **loss_dict}, dist_info)
            check_finite(losses, iteration)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            window_iters += 1
            now = time.perf_counter()
            its = window_iters / max(now - window_start, 1e-9)
            bar.update(iteration, losses["loss"], lr, its)
            if iteration % log_period == 0 or iteration == max_iter:
                if log is not None and dist_info.is_main:
                    log.write({"iter": iteration, "max_iter": max_iter, **losses, "lr": lr,
                               "time": 1.0 / its, "it/s": its, "elapsed": now - started})
                bar.logged(iteration, losses["loss"], lr, its)
                window_start, window_iters = now, 0
            saved = save_checkpoint is not None and (iteration % checkpoint_period == 0
                                                     or iteration == max_iter)
            if saved:
                save_checkpoint(iteration)
            if signals is not None and signals.requested():
                if save_checkpoint is not None and not saved:
                    save_checkpoint(iteration)
                if log is not None and dist_info.is_main:
                    names = ", ".join(map(signal_name, signals.pending)) or "another process's"
                    log.write({"iter": iteration, "event": f"checkpoint on {names} signal"})
                signals.deliver()  # submitit requeues and exits; an ignored signal returns
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    done = max(0, max_iter - start_iter)
    return TrainResult(done, seconds, done * images_per_batch / seconds if done else 0.0, losses)
