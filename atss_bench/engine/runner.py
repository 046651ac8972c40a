"""``run_experiment``: one experiment from config to COCO metrics, resumable, on 1..N processes.

    run_dir/log.jsonl        one line per logged iteration, then an {"eval": ...} line
    run_dir/tensorboard/     the same records as TensorBoard events (engine.tensorboard)
    run_dir/checkpoints/     ckpt_<iter>.pt, the last two (see engine.checkpoint)

Before the model is built the dataset is fingerprinted and checked (``loaders.identify_dataset``):
bad data fails here, naming the split or the file. A checkpoint records its config hash and its
dataset fingerprint and device type; resuming refuses a checkpoint of another config, another
dataset (one from before fingerprints is accepted for mini only, whose generator spec is in the
config) or another device type (CPU vs CUDA; ``engine.distributed`` picks the device).

Called once per process (torchrun, srun, submitit or plain Python); the process group comes from
``engine.distributed.init_distributed``. Started again on the same ``run_dir`` it resumes from the
last good checkpoint and, on CPU, ends with exactly the weights of an uninterrupted run.
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from atss_bench.config import ExperimentConfig, config_hash
from atss_bench.data.identity import DatasetIdentity
from atss_bench.engine.checkpoint import (capture_rng_state, load_checkpoint,
                                          load_latest_checkpoint, restore_rng_state,
                                          save_checkpoint)
from atss_bench.engine.distributed import (DistInfo, broadcast_from_main, gather_to_main,
                                           init_distributed, shutdown_distributed)
from atss_bench.engine.inference import evaluate_model
from atss_bench.engine.loaders import (build_train_batches, build_train_dataset,
                                       identify_dataset, prepare_dataset_root)
from atss_bench.engine.monitor import EvalProgress, JsonlLog
from atss_bench.engine.preemption import DeferredSignals
from atss_bench.engine.solver import build_optimizer, build_scheduler
from atss_bench.engine.tensorboard import open_event_log
from atss_bench.engine.train import train_loop
from atss_bench.errors import TrainingError
from atss_bench.model import build_detector

CHECKPOINT_FORMAT = 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _find_resume_state(ckpt_dir: Path, dist_info: DistInfo) -> dict[str, Any] | None:
    """Rank 0 picks the newest valid checkpoint; every process loads that same file."""
    found = load_latest_checkpoint(ckpt_dir) if dist_info.is_main else None
    path = broadcast_from_main(str(found[0]) if found else None, dist_info)
    if path is None:
        return None
    return found[1] if found else load_checkpoint(Path(path))


@contextmanager
def cpu_thread_budget(device: torch.device, num_workers: int) -> Iterator[int]:
    """On CPU, leave a core to each data-loading worker and share the rest between this
    machine's processes: intra-op threads = max(1, cores // LOCAL_WORLD_SIZE - num_workers).

    Oversubscribed OpenMP threads spin and wait on each other. Mini profile on a (shared) 2-core
    machine: 0.22 s/iteration with 1 thread + 1 loader worker, 0.53 s with 2 threads + 1 worker,
    0.63 s with 2 threads and loading in the main process. Nothing changes on CUDA or when
    OMP_NUM_THREADS is set (the user's choice wins). The previous setting is restored.
    """
    before = torch.get_num_threads()
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        yield before
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_process = (cores or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = max(1, per_process - num_workers)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


class _Checkpointer:
    """Collects every process's RNG state and writes the training state on rank 0."""

    def __init__(self, ckpt_dir: Path, model: nn.Module, parts: dict[str, Any], sampler: Any,
                 config: ExperimentConfig, dist_info: DistInfo, dataset: DatasetIdentity) -> None:
        self.ckpt_dir, self.model, self.parts = ckpt_dir, model, parts
        self.sampler, self.config, self.dist_info = sampler, config, dist_info
        self.dataset = dataset

    def __call__(self, iteration: int) -> None:
        rng_states = gather_to_main(capture_rng_state(), self.dist_info)
        if rng_states is None:  # not rank 0
            return
        state = {
            "format": CHECKPOINT_FORMAT, "iteration": iteration,
            "config_hash": config_hash(self.config), "world_size": self.dist_info.world_size,
            "dataset_fingerprint": self.dataset.fingerprint,
            "device": self.dist_info.device.type,
            "model": self.model.state_dict(),
            **{name: part.state_dict() for name, part in self.parts.items()},
            "rng": rng_states,
            "sampler": {**self.sampler.state_dict(),
                        "position": iteration * self.config.train.images_per_batch},
        }
        save_checkpoint(self.ckpt_dir, iteration, state)


def _check_checkpoint_dataset(state: dict[str, Any], dataset: DatasetIdentity) -> None:
    recorded = state.get("dataset_fingerprint")
    if recorded == dataset.fingerprint or (recorded is None and dataset.kind == "mini"):
        return
    what = (f"dataset {recorded}" if isinstance(recorded, str)
            else "a dataset it did not record (made before dataset fingerprints)")
    raise TrainingError(
        f"the checkpoint in this run directory was trained on {_one_line(what)}, "
        f"not on this dataset {dataset.describe()}",
        hint="--force retrains the run on this dataset, or use --results DIR for a separate store",
    )


def _check_checkpoint_device(state: dict[str, Any], device: torch.device) -> None:
    """A run is trained on one kind of device: CUDA (AMP, other kernels) and CPU arithmetic
    differ, so a CPU checkpoint resumed on a GPU (or back) would give a record of neither."""
    recorded = state.get("device")
    if recorded is None or recorded == device.type:  # None: made before devices were recorded
        return
    back = f"--device {recorded} resumes it where it started, " if recorded in ("cpu", "cuda") else ""
    raise TrainingError(
        f"the checkpoint in this run directory was trained on {_one_line(str(recorded))}, "
        f"not on {device.type}: resuming it here would mix two devices' arithmetic in one run",
        hint=f"{back}--force retrains it on {device.type}",
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _resume(state: dict[str, Any], model: nn.Module, parts: dict[str, Any],
            config: ExperimentConfig, dist_info: DistInfo, dataset: DatasetIdentity) -> int:
    if state.get("config_hash") != config_hash(config):
        raise TrainingError(
            "the checkpoint in this run directory belongs to a different config",
            hint="use a fresh run directory (run ids are config hashes) or delete its checkpoints/",
        )
    _check_checkpoint_dataset(state, dataset)
    _check_checkpoint_device(state, dist_info.device)
    model.load_state_dict(state["model"])
    for name, part in parts.items():
        part.load_state_dict(state[name])
    rng = state["rng"]
    restore_rng_state(rng[dist_info.rank] if len(rng) == dist_info.world_size else rng[0])
    return int(state["iteration"])


@contextmanager
def _open_log(run_dir: Path, config: ExperimentConfig,
              dist_info: DistInfo) -> Iterator[JsonlLog | None]:
    """log.jsonl, mirrored into TensorBoard events when installed (``engine.tensorboard``);
    rank 0 writes, the others get None. Closed when the run ends, also by an exception."""
    if not dist_info.is_main:
        yield None
        return
    events = open_event_log(run_dir, config)
    log = JsonlLog(run_dir / "log.jsonl", sinks=[events] if events is not None else [])
    try:
        yield log
    finally:
        log.close()


def _run(config: ExperimentConfig, run_dir: Path, data_root: str | None, progress: bool,
         dist_info: DistInfo, log: JsonlLog | None) -> dict[str, Any]:
    device, train_cfg = dist_info.device, config.train
    seed_everything(config.seed)  # same on every process: identical initial weights
    root = prepare_dataset_root(config.data, data_root, dist_info)
    train_set = build_train_dataset(root, config.data)
    dataset = identify_dataset(root, config.data, train_set, dist_info)  # bad data stops here
    model = build_detector(config.model, train_set.num_classes).to(device)
    model.size_divisibility = config.data.size_divisibility  # batch padding is a data setting
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=train_cfg.amp and device.type == "cuda")
    parts = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}

    ckpt_dir = run_dir / "checkpoints"
    state = _find_resume_state(ckpt_dir, dist_info)
    start_iter = _resume(state, model, parts, config, dist_info, dataset) if state else 0
    del state
    if log is not None:
        log.truncate_after(start_iter)
    train_model: nn.Module = model
    if dist_info.distributed:
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler, batches = build_train_batches(
        train_set, config.data, images_per_batch=train_cfg.images_per_batch, seed=config.seed,
        start_iter=start_iter, dist_info=dist_info)
    checkpointer = _Checkpointer(ckpt_dir, model, parts, sampler, config, dist_info, dataset)
    with DeferredSignals(dist_info) as signals:  # a preemption checkpoints its iteration first
        trained = train_loop(
            train_model, optimizer, scheduler, scaler, batches, start_iter=start_iter,
            max_iter=train_cfg.max_iter, images_per_batch=train_cfg.images_per_batch,
            dist_info=dist_info, amp=train_cfg.amp, checkpoint_period=train_cfg.checkpoint_period,
            save_checkpoint=checkpointer, log=log, progress=progress, signals=signals,
            progress_label=config_hash(config))
    del batches  # stops loader workers before evaluation starts its own

    evaluated = evaluate_model(
        model, root, config.data, config.model.test, dist_info, amp=train_cfg.amp,
        progress=EvalProgress(progress and dist_info.is_main, label=config_hash(config)))
    provenance = {
        "device": _device_label(device), "world_size": dist_info.world_size,
        "images_per_sec": trained.images_per_sec, "train_seconds": trained.seconds,
        "eval_seconds": evaluated.seconds, "iterations": train_cfg.max_iter,
        "iterations_this_session": trained.iterations,
        "resumed_from": start_iter if start_iter > 0 else None,
        "evaluator": evaluated.evaluator, "num_val_images": evaluated.num_images,
        "num_detections": evaluated.num_detections, "dataset": dataset.to_json(),
    }
    if log is not None:
        log.write({"iter": train_cfg.max_iter, "eval": evaluated.metrics,
                   "evaluator": evaluated.evaluator, "eval_seconds": evaluated.seconds})
    return {"metrics": evaluated.metrics, "provenance": provenance}


def run_experiment(config: ExperimentConfig, run_dir: Path, *, data_root: str | None = None,
                   progress: bool = True) -> dict:
    """Train ``config`` (resuming from ``run_dir/checkpoints`` if any) and evaluate it on val.

    Returns ``{"metrics": {AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl}``
    (COCOeval stats x 100; NaN where COCOeval says -1), ``"provenance": {device, world_size,
    images_per_sec, train_seconds, eval_seconds, iterations, resumed_from, evaluator,
    num_val_images, dataset (``DatasetIdentity.to_json()``), ...}}`` on every process. Only
    rank 0 writes into ``run_dir``, and with ``progress`` shows progress on stdout: a rich bar on
    a terminal, else plain lines (``engine.monitor``).
    """
    run_dir = Path(run_dir)
    dist_info = init_distributed()
    try:
        if dist_info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        with cpu_thread_budget(dist_info.device, config.data.num_workers) as threads, \
                _open_log(run_dir, config, dist_info) as log:
            result = _run(config, run_dir, data_root, progress, dist_info, log)
        result["provenance"]["threads"] = threads
        return result
    finally:
        shutdown_distributed(dist_info)
