"""A seeded, infinite, resumable batch sampler and per-sample augmentation seeds.

The data order is a pure function of ``(seed, iteration)``: the dataset is visited as a stream
of per-epoch permutations, epoch ``e`` shuffled by a generator seeded with ``seed + e``, and the
global batch of iteration ``it`` is the stream's positions ``[it * B, (it + 1) * B)``. Process
``r`` of ``W`` takes the ``r``-th contiguous slice of ``B / W`` of them, so 2 processes x 2 images
see exactly the images of 1 process x 4, and a resumed run sees exactly the batches it would
have seen. DataLoader shuffling (whose state cannot be saved) is never used.

With ``group_ids`` (aspect-ratio grouping, as the official code's ``ASPECT_RATIO_GROUPING``) a
global batch holds images of one group only, so it pads less: epoch ``e``'s permutation is
walked in order, each group's images fill its own batch, and a batch is emitted when full. The
groups' leftovers (fewer than ``B`` each) are then batched together in permutation order and a
last partial batch is dropped, so every epoch has the same number of full batches and iteration
``it`` is batch ``it mod n`` of epoch ``it div n``: still a pure function of ``(seed, it)``.

Each sample comes with its own augmentation seed derived from ``(seed, epoch, index)``;
:class:`SeededDataset` seeds python's ``random``, numpy's and torch's global RNGs with it around
the wrapped dataset's ``__getitem__`` (and restores them afterwards), so random flips and
multi-scale sizes do not depend on which worker loads the sample or on any worker's RNG state.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from atss_bench.errors import ConfigError

SampleKey = tuple[int, int]  # (dataset index, augmentation seed)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 31-bit seed, a pure function of ``(seed, epoch, index)``."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)
    return int(state[0]) & 0x7FFFFFFF


def per_process_batch(images_per_batch: int, world_size: int) -> int:
    """``images_per_batch`` is the global batch: split it evenly over the processes."""
    if images_per_batch % world_size:
        raise ConfigError(
            f"train.images_per_batch={images_per_batch} is the global batch and must be divisible "
            f"by the number of processes ({world_size})",
            hint=f"use a multiple of {world_size}, e.g. "
                 f"{max(world_size, images_per_batch // world_size * world_size)}",
        )
    return images_per_batch // world_size


class ResumableBatchSampler(Sampler[list[SampleKey]]):
    """Infinite batches of ``(index, augmentation seed)`` for one process, from ``start_iter``."""

    def __init__(
        self, dataset_size: int, images_per_batch: int, *, seed: int, start_iter: int = 0,
        rank: int = 0, world_size: int = 1, group_ids: Sequence[int] | None = None,
    ) -> None:
        if dataset_size < 1:
            raise ConfigError("the training set is empty")
        if group_ids is not None and len(group_ids) != dataset_size:
            raise ValueError(f"{len(group_ids)} group ids for {dataset_size} samples")
        self.dataset_size = dataset_size
        self.images_per_batch = images_per_batch
        self.batch_per_process = per_process_batch(images_per_batch, world_size)
        self.seed = seed
        self.start_iter = start_iter
        self.rank = rank
        self.world_size = world_size
        self.group_ids = None if group_ids is None else list(group_ids)
        self._epoch = -1
        self._perm: list[int] = []
        self._batches: tuple[int, list[list[int]]] = (-1, [])
        if self.group_ids is not None:
            sizes = Counter(self.group_ids).values()
            leftovers = sum(n % images_per_batch for n in sizes)
            self.batches_per_epoch = (sum(n // images_per_batch for n in sizes)
                                      + leftovers // images_per_batch)
            if self.batches_per_epoch == 0:
                raise ConfigError(f"the training set ({dataset_size} images) is smaller than "
                                  f"one batch (train.images_per_batch={images_per_batch})")

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = torch.randperm(self.dataset_size, generator=generator).tolist()
            self._epoch = epoch
        return self._perm

    def _grouped_batches(self, epoch: int) -> list[list[int]]:
        """Epoch ``epoch``'s global batches of dataset indices (grouping on; see module doc)."""
        if self._batches[0] != epoch:
            assert self.group_ids is not None
            buckets: dict[int, list[int]] = {}
            batches = []
            for index in self._permutation(epoch):
                bucket = buckets.setdefault(self.group_ids[index], [])
                bucket.append(index)
                if len(bucket) == self.images_per_batch:
                    batches.append(bucket[:])
                    bucket.clear()
            position = {index: pos for pos, index in enumerate(self._perm)}
            leftovers = sorted((i for b in buckets.values() for i in b), key=position.__getitem__)
            batches += [leftovers[i:i + self.images_per_batch]
                        for i in range(0, len(leftovers) - self.images_per_batch + 1,
                                       self.images_per_batch)]
            self._batches = (epoch, batches)
        return self._batches[1]

    def keys_at(self, position: int, count: int) -> list[SampleKey]:
        """The ``count`` samples at global stream positions ``position, position + 1, ...``."""
        keys = []
        for pos in range(position, position + count):
            epoch, offset = divmod(pos, self.dataset_size)
            index = self._permutation(epoch)[offset]
            keys.append((index, sample_seed(self.seed, epoch, index)))
        return keys

    def batch_at(self, iteration: int) -> list[SampleKey]:
        """This process's slice of the global batch of ``iteration``."""
        if self.group_ids is None:
            start = iteration * self.images_per_batch + self.rank * self.batch_per_process
            return self.keys_at(start, self.batch_per_process)
        epoch, number = divmod(iteration, self.batches_per_epoch)
        batch = self._grouped_batches(epoch)[number]
        mine = batch[self.rank * self.batch_per_process:(self.rank + 1) * self.batch_per_process]
        return [(index, sample_seed(self.seed, epoch, index)) for index in mine]

    def state_dict(self) -> dict[str, int | bool]:
        return {"seed": self.seed, "start_iter": self.start_iter,
                "images_per_batch": self.images_per_batch, "dataset_size": self.dataset_size,
                "grouped": self.group_ids is not None}

    def __iter__(self) -> Iterator[list[SampleKey]]:
        iteration = self.start_iter
        while True:
            yield self.batch_at(iteration)
            iteration += 1


class SeededDataset(Dataset):
    """Wraps a dataset indexed by ``int``; takes ``(index, seed)`` keys and seeds the global RNGs
    (python, numpy, torch) with ``seed`` while the wrapped ``__getitem__`` runs."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey | int) -> Any:
        if isinstance(key, int):
            return self.dataset[key]
        index, seed = key
        saved = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
        try:
            random.seed(seed)
            np.random.seed(seed)
            torch.random.default_generator.manual_seed(seed)  # CPU only: CUDA RNGs untouched
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.random.set_rng_state(saved[2])


def shard_indices(num_items: int, rank: int, world_size: int) -> Sequence[int]:
    """Evaluation shard of process ``rank``: items ``rank, rank + W, rank + 2W, ...``."""
    return range(rank, num_items, world_size)
