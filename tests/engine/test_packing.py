"""Packed hand-over of a batch from a loader worker: the same tensors, exactly, as views of one
buffer per dtype."""
from __future__ import annotations

import pickle

import torch
from torch.utils.data import DataLoader

from atss_bench.data import collate_detection
from atss_bench.engine.packing import collate_packed, unpack_batch


def _samples() -> list:
    generator = torch.Generator().manual_seed(0)
    hwc = torch.rand(5, 7, 3, generator=generator)
    return [
        (hwc.permute(2, 0, 1), {"boxes": torch.tensor([[0.5, 1.0, 3.25, 4.0]]),
                                "labels": torch.tensor([2]), "image_id": 11,
                                "orig_size": (10, 14), "size": (5, 7), "scale": (0.5, 0.5)}),
        (torch.rand(3, 4, 6, generator=generator),
         {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
          "image_id": 13, "orig_size": (4, 6), "size": (4, 6), "scale": (1.0, 1.0)}),
    ]


def _assert_identical(got, expected) -> None:
    (images, targets), (images_ref, targets_ref) = got, expected
    assert len(images) == len(images_ref)
    for image, ref in zip(images, images_ref):
        assert image.dtype == ref.dtype and image.shape == ref.shape and torch.equal(image, ref)
        assert image.is_contiguous()
    for target, ref in zip(targets, targets_ref):
        assert list(target) == list(ref)  # same keys, same order
        for key, value in ref.items():
            if isinstance(value, torch.Tensor):
                assert target[key].dtype == value.dtype and target[key].shape == value.shape
                assert torch.equal(target[key], value), key
            else:
                assert target[key] == value, key


def test_round_trip_equals_the_plain_collate() -> None:
    samples = _samples()
    packed = collate_packed(samples)
    assert set(packed.buffers) == {torch.float32, torch.int64}  # two segments, not six
    assert all(buffer.is_shared() for buffer in packed.buffers.values())
    assert packed.buffers[torch.float32].numel() == 3 * 5 * 7 + 4 + 3 * 4 * 6 + 0
    _assert_identical(unpack_batch(pickle.loads(pickle.dumps(packed))), collate_detection(samples))


def test_through_a_worker_process() -> None:
    samples = _samples()
    loader = DataLoader(samples, batch_size=2, num_workers=1, collate_fn=collate_packed)
    (packed,) = list(loader)
    _assert_identical(unpack_batch(packed), collate_detection(samples))
