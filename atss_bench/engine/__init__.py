"""Training, checkpoint/resume, distributed set-up and COCO evaluation.

Public entry point: ``run_experiment(config, run_dir, *, data_root=None, progress=True) -> dict``
(see ``engine.runner``). Imported lazily so that ``atss_bench.engine.evaluate`` or ``.solver``
can be used without building the model and data stack.

    solver      SGD or AdamW param groups (bias lr x2, no decay on biases), warm-up + multi-step lr
    sampler     seeded, infinite, resumable batch sampler; per-sample augmentation seeds
    checkpoint  atomic, checksummed checkpoints; RNG capture/restore
    distributed torchrun / SLURM / explicit process-group set-up, collectives
    train       the training loop (AMP on CUDA, NaN guard, log, checkpoints)
    loaders     dataset roots, train stream, val datasets per test scale
    packing     a batch handed over by a loader worker as one shared buffer per dtype
    inference   detections on val per test pass, merged, gather to rank 0
    tta         test passes (scales, flips, size ranges) and their merge (NMS, box voting)
    evaluate    COCOeval (faster-coco-eval or pycocotools): the only COCO-eval import
    monitor     log.jsonl; progress: a rich bar on a terminal, plain lines elsewhere
    preemption  preemption signals wait for the end of the iteration, which is checkpointed
    runner      run_experiment
"""
from __future__ import annotations

from typing import Any

__all__ = ["run_experiment"]


def __getattr__(name: str) -> Any:
    if name == "run_experiment":
        from atss_bench.engine.runner import run_experiment

        return run_experiment
    raise AttributeError(f"module 'atss_bench.engine' has no attribute {name!r}")
