"""Datasets and loaders for a run: where the data lives, the resumable train stream, val sets.

Dataset root: the rule of ``data.roots.resolve_dataset_root`` (shared with dataset identity).
For ``data.kind == "mini"`` the synthetic mini-COCO is generated there on first use: rank 0
generates, the other processes wait at a barrier and then find it cached.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Subset

from atss_bench.config import DataConfig
from atss_bench.data import (CocoDetection, collate_detection, ensure_mini_coco,
                             resolve_dataset_root)
from atss_bench.data.identity import DatasetIdentity, dataset_identity
from atss_bench.data.preflight import preflight_dataset
from atss_bench.engine.distributed import DistInfo, barrier, broadcast_from_main
from atss_bench.engine.packing import collate_packed, unpack_batch
from atss_bench.engine.sampler import ResumableBatchSampler, SeededDataset, shard_indices
from atss_bench.engine.train import Batch
from atss_bench.errors import DataError

EVAL_IMAGES_PER_BATCH = 8  # global; split over the processes
# A training set whose decoded images fit in this is decoded once per loader worker and kept
# (``CocoDetection(cache_bytes=...)``): mini-COCO's 600 images take ~200 MiB. Its worker then
# spends a third less CPU a batch (no JPEG decoding from the second epoch on), which the
# training process gets back when both share 2 cores with another run (``run --jobs 2``).
TRAIN_IMAGE_CACHE_BYTES = 512 << 20


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
    return resolve_dataset_root(data, data_root)


def build_train_dataset(root: Path, data: DataConfig) -> CocoDetection:
    return CocoDetection(root, data.train_split, train=True, min_size=list(data.min_size),
                         max_size=data.max_size, flip_prob=data.flip_prob,
                         remove_images_without_annotations=True,
                         cache_bytes=TRAIN_IMAGE_CACHE_BYTES)


def build_train_batches(
    dataset: CocoDetection, data: DataConfig, *, images_per_batch: int, seed: int,
    start_iter: int, dist_info: DistInfo,
) -> tuple[ResumableBatchSampler, Iterator[Batch]]:
    """This process's infinite batch stream from ``start_iter`` (order and augmentation are a
    function of ``(seed, iteration)`` only; see ``engine.sampler``). Loader workers hand each
    batch over packed (``engine.packing``)."""
    groups = dataset.aspect_ratio_groups() if data.aspect_ratio_grouping else None
    sampler = ResumableBatchSampler(len(dataset), images_per_batch, seed=seed,
                                    start_iter=start_iter, rank=dist_info.rank,
                                    world_size=dist_info.world_size, group_ids=groups)
    packed = data.num_workers > 0
    loader = DataLoader(
        SeededDataset(dataset), batch_sampler=sampler,
        collate_fn=collate_packed if packed else collate_detection,
        num_workers=data.num_workers, pin_memory=dist_info.device.type == "cuda",
        # DataLoader draws its worker base seed from this generator, never the global RNG.
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        worker_init_fn=_ignore_sigterm,
    )
    return sampler, (map(unpack_batch, loader) if packed else iter(loader))


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


def build_val_datasets(root: Path, data: DataConfig,
                       sizes: list[tuple[int, int]] | None = None) -> list[CocoDetection]:
    """One val dataset per test scale (same images, resized differently); ``sizes``: (shorter
    side, longer-side cap) pairs, default ``test_sizes(data)``."""
    return [CocoDetection(root, data.val_split, train=False, min_size=size, max_size=max_size,
                          flip_prob=0.0, remove_images_without_annotations=False)
            for size, max_size in (test_sizes(data) if sizes is None else sizes)]


def build_val_loader(dataset: CocoDetection, num_images: int, data: DataConfig,
                     dist_info: DistInfo) -> DataLoader:
    """This process's shard (``rank::world_size``) of the first ``num_images`` images."""
    shard = list(shard_indices(num_images, dist_info.rank, dist_info.world_size))
    batch = max(1, EVAL_IMAGES_PER_BATCH // dist_info.world_size)
    return DataLoader(Subset(dataset, shard), batch_size=batch, shuffle=False,
                      collate_fn=collate_detection, num_workers=data.num_workers)


def identify_dataset(root: Path, data: DataConfig, train_set: CocoDetection,
                     dist_info: DistInfo) -> DatasetIdentity:
    """The dataset's identity, after the pre-training data check (``data.preflight``).

    Rank 0 fingerprints and checks (both cached); every process gets its identity, or raises the
    same DataError, so a bad file stops all of them before the model is built.
    """
    outcome: dict[str, Any] | None = None
    if dist_info.is_main:
        try:
            identity = dataset_identity(data, root)
            preflight_dataset(root, [data.train_split, data.val_split], identity.fingerprint,
                              loaded={data.train_split: train_set.coco.dataset})
            outcome = {"identity": identity.to_json()}
        except DataError as exc:
            outcome = {"error": [exc.message, exc.hint]}
    outcome = broadcast_from_main(outcome, dist_info)
    assert outcome is not None
    if "error" in outcome:
        raise DataError(*outcome["error"])
    identity = DatasetIdentity.from_json(outcome["identity"])
    assert identity is not None
    return identity
