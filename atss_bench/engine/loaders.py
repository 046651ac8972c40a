"""Datasets and loaders for a run: where the data lives, the resumable train stream, val sets.

Dataset root, first match wins:
- ``data.kind == "mini"``: the synthetic mini-COCO for ``data.mini``, generated once and cached
  under ``$ATSS_BENCH_CACHE`` (default ``~/.cache/atss-bench``); rank 0 generates, the other
  processes wait at a barrier and then find it cached. ``data.root`` is not used for mini.
- ``data.kind == "coco"``: the ``data_root`` argument, ``data.root``, ``$ATSS_BENCH_DATA``;
  none of them: ``DataError`` with a hint.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Subset

from atss_bench.config import DataConfig
from atss_bench.data import CocoDetection, collate_detection, ensure_mini_coco, resolve_data_root
from atss_bench.engine.distributed import DistInfo, barrier
from atss_bench.engine.sampler import ResumableBatchSampler, SeededDataset, shard_indices
from atss_bench.engine.train import Batch
from atss_bench.errors import DataError

EVAL_IMAGES_PER_BATCH = 8  # global; split over the processes


def prepare_dataset_root(data: DataConfig, data_root: str | None, dist_info: DistInfo) -> Path:
    """The COCO-layout root of the run's dataset (see module doc)."""
    if data.kind == "mini":
        params = data.mini.model_dump()
        if dist_info.is_main:
            root = ensure_mini_coco(None, **params)
        barrier(dist_info)
        if not dist_info.is_main:
            root = ensure_mini_coco(None, **params)
        return Path(root)
    root = resolve_data_root(data_root or data.root)
    if root is None:
        raise DataError(
            "no COCO dataset root given",
            hint="pass --data-root, set data.root in the recipe or export ATSS_BENCH_DATA=/path/to/coco "
                 "(the folder holding annotations/, train2017/, val2017/); or use --profile mini",
        )
    return root


def build_train_dataset(root: Path, data: DataConfig) -> CocoDetection:
    return CocoDetection(root, data.train_split, train=True, min_size=list(data.min_size),
                         max_size=data.max_size, flip_prob=data.flip_prob,
                         remove_images_without_annotations=True)


def build_train_batches(
    dataset: CocoDetection, data: DataConfig, *, images_per_batch: int, seed: int,
    start_iter: int, dist_info: DistInfo,
) -> tuple[ResumableBatchSampler, Iterator[Batch]]:
    """This process's infinite batch stream from ``start_iter`` (order and augmentation are a
    function of ``(seed, iteration)`` only; see ``engine.sampler``)."""
    groups = dataset.aspect_ratio_groups() if data.aspect_ratio_grouping else None
    sampler = ResumableBatchSampler(len(dataset), images_per_batch, seed=seed,
                                    start_iter=start_iter, rank=dist_info.rank,
                                    world_size=dist_info.world_size, group_ids=groups)
    loader = DataLoader(
        SeededDataset(dataset), batch_sampler=sampler, collate_fn=collate_detection,
        num_workers=data.num_workers, pin_memory=dist_info.device.type == "cuda",
        # DataLoader draws its worker base seed from this generator, never the global RNG.
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        worker_init_fn=_ignore_sigterm,
    )
    return sampler, iter(loader)


def _ignore_sigterm(_worker_id: int) -> None:
    """SLURM signals the whole process group on preemption or cancel; the main process decides
    (checkpoint and requeue, or stop) and takes its workers down with it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def val_image_ids(dataset: CocoDetection, data: DataConfig) -> list[int]:
    """The evaluated images: the first ``data.val_images`` ids (all when None)."""
    ids = list(dataset.ids)
    return ids[: data.val_images] if data.val_images is not None else ids


def test_sizes(data: DataConfig) -> list[tuple[int, int]]:
    """(shorter side, longer-side cap) per test scale: ``test_min_size`` first, then
    ``test_extra_sizes``; the cap grows with the scale (``max_size * size / test_min_size``)."""
    sizes = [data.test_min_size, *[s for s in data.test_extra_sizes if s != data.test_min_size]]
    return [(size, max(data.max_size, round(data.max_size * size / data.test_min_size)))
            for size in sizes]


def build_val_datasets(root: Path, data: DataConfig) -> list[CocoDetection]:
    """One val dataset per test scale (same images, resized differently)."""
    return [CocoDetection(root, data.val_split, train=False, min_size=size, max_size=max_size,
                          flip_prob=0.0, remove_images_without_annotations=False)
            for size, max_size in test_sizes(data)]


def build_val_loader(dataset: CocoDetection, num_images: int, data: DataConfig,
                     dist_info: DistInfo) -> DataLoader:
    """This process's shard (``rank::world_size``) of the first ``num_images`` images."""
    shard = list(shard_indices(num_images, dist_info.rank, dist_info.world_size))
    batch = max(1, EVAL_IMAGES_PER_BATCH // dist_info.world_size)
    return DataLoader(Subset(dataset, shard), batch_size=batch, shuffle=False,
                      collate_fn=collate_detection, num_workers=data.num_workers)
