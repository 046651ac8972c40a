"""The resumable sampler: order is a function of (seed, iteration); processes split the global
batch; augmentation seeds do not depend on the caller's RNG state."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from atss_bench.engine.sampler import (ResumableBatchSampler, SeededDataset, per_process_batch,
                                       sample_seed, shard_indices)
from atss_bench.errors import ConfigError


def _take(sampler: ResumableBatchSampler, n: int) -> list[list[tuple[int, int]]]:
    return list(itertools.islice(iter(sampler), n))


def test_epochs_are_permutations_and_seeded() -> None:
    sampler = ResumableBatchSampler(10, 5, seed=3)
    batches = _take(sampler, 6)  # 3 epochs of 10
    for epoch in range(3):
        indices = [i for b in batches[2 * epoch:2 * epoch + 2] for i, _ in b]
        assert sorted(indices) == list(range(10))
    first_epochs = [[i for b in batches[2 * e:2 * e + 2] for i, _ in b] for e in range(3)]
    assert first_epochs[0] != first_epochs[1]  # reshuffled each epoch
    assert _take(ResumableBatchSampler(10, 5, seed=3), 6) == batches
    assert _take(ResumableBatchSampler(10, 5, seed=4), 6) != batches


def test_resume_continues_the_same_stream() -> None:
    full = _take(ResumableBatchSampler(7, 3, seed=1), 12)
    resumed = _take(ResumableBatchSampler(7, 3, seed=1, start_iter=5), 7)
    assert resumed == full[5:]


def test_processes_split_the_global_batch() -> None:
    single = _take(ResumableBatchSampler(9, 4, seed=0), 5)
    rank0 = _take(ResumableBatchSampler(9, 4, seed=0, rank=0, world_size=2), 5)
    rank1 = _take(ResumableBatchSampler(9, 4, seed=0, rank=1, world_size=2), 5)
    for whole, a, b in zip(single, rank0, rank1):
        assert whole == a + b


def test_global_batch_must_divide() -> None:
    assert per_process_batch(16, 8) == 2
    with pytest.raises(ConfigError, match="divisible"):
        per_process_batch(6, 4)
    with pytest.raises(ConfigError):
        ResumableBatchSampler(10, 3, seed=0, world_size=2)


def test_sample_seed_depends_on_epoch_and_index() -> None:
    seeds = {sample_seed(0, e, i) for e in range(4) for i in range(50)}
    assert len(seeds) == 200
    assert sample_seed(5, 2, 3) == sample_seed(5, 2, 3)
    assert 0 <= sample_seed(2**40, 1, 1) < 2**31


class _RandomItems:
    """Stands in for a dataset whose augmentation draws from the global RNGs."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> tuple[float, float, float]:
        return float(torch.rand(())), random.random(), float(np.random.rand())


def test_seeded_dataset_is_independent_of_global_rng_and_restores_it() -> None:
    dataset = SeededDataset(_RandomItems())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    first = dataset[(1, 1234)]
    after = (torch.rand(()), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    assert dataset[(1, 1234)] == first  # same key, same draw, whatever the global state
    assert dataset[(1, 1235)] != first
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    dataset[(2, 77)]
    assert (torch.rand(()), random.random(), np.random.rand()) == after  # state restored


def test_shards_cover_every_item_once() -> None:
    shards = [list(shard_indices(11, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))


GROUPS = [0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0]  # 7 landscape, 4 portrait


def _indices(batch: list[tuple[int, int]]) -> list[int]:
    return [index for index, _ in batch]


def test_grouped_batches_follow_the_permutation_and_drop_the_last_partial_batch() -> None:
    sampler = ResumableBatchSampler(11, 3, seed=5, group_ids=GROUPS)
    # 7 // 3 + 4 // 3 full batches, then the leftovers (1 + 1) make no full batch: 3 per epoch.
    assert sampler.batches_per_epoch == 3
    for epoch in range(3):
        perm = torch.randperm(11, generator=torch.Generator().manual_seed(5 + epoch)).tolist()
        landscape = [i for i in perm if GROUPS[i] == 0]
        portrait = [i for i in perm if GROUPS[i] == 1]
        expected = [landscape[0:3], landscape[3:6], portrait[0:3]]
        # emitted when full: in the order each batch's last image comes in the permutation
        expected.sort(key=lambda b: perm.index(b[-1]))
        got = [_indices(sampler.batch_at(3 * epoch + n)) for n in range(3)]
        assert got == expected
        seeds = [s for n in range(3) for _, s in sampler.batch_at(3 * epoch + n)]
        assert seeds == [sample_seed(5, epoch, i) for b in expected for i in b]


def test_grouped_epoch_lengths_count_full_batches_only() -> None:
    # batches of 2: 3 + 2 full, leftovers 1 + 0 make none (the odd landscape image is dropped)
    sampler = ResumableBatchSampler(11, 2, seed=0, group_ids=GROUPS)
    assert sampler.batches_per_epoch == 5
    assert all(len({GROUPS[i] for i in _indices(b)}) == 1 for b in _take(sampler, 50))
    assert ResumableBatchSampler(11, 4, seed=0, group_ids=GROUPS).batches_per_epoch == 2
    six_four = GROUPS[:10]  # 6 landscape, 4 portrait
    assert ResumableBatchSampler(10, 3, seed=1, group_ids=six_four).batches_per_epoch == 3
    assert ResumableBatchSampler(10, 4, seed=1, group_ids=six_four).batches_per_epoch == 2


def test_grouped_leftover_batch_mixes_groups() -> None:
    groups = [0, 0, 0, 1, 1, 1]  # batches of 2: one full batch each, leftovers 1 + 1 -> mixed
    sampler = ResumableBatchSampler(6, 2, seed=2, group_ids=groups)
    assert sampler.batches_per_epoch == 3
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(2)).tolist()
    last = _indices(sampler.batch_at(2))
    assert {groups[i] for i in last} == {0, 1}
    assert last == sorted(last, key=perm.index)
    epoch = [i for n in range(3) for i in _indices(sampler.batch_at(n))]
    assert sorted(epoch) == list(range(6))


def test_grouped_stream_resumes_and_splits_over_processes() -> None:
    full = _take(ResumableBatchSampler(11, 2, seed=3, group_ids=GROUPS), 17)
    resumed = _take(ResumableBatchSampler(11, 2, seed=3, start_iter=9, group_ids=GROUPS), 8)
    assert resumed == full[9:]
    ranks = [_take(ResumableBatchSampler(11, 2, seed=3, rank=r, world_size=2, group_ids=GROUPS),
                   17) for r in range(2)]
    for whole, a, b in zip(full, *ranks):
        assert whole == a + b


def test_grouping_needs_one_full_batch_and_one_id_per_sample() -> None:
    with pytest.raises(ConfigError, match="smaller than one batch"):
        ResumableBatchSampler(3, 4, seed=0, group_ids=[0, 1, 0])
    with pytest.raises(ValueError, match="2 group ids for 3 samples"):
        ResumableBatchSampler(3, 1, seed=0, group_ids=[0, 1])
