"""One shared buffer per dtype for a training batch that a loader worker hands over.

A tensor sent from a DataLoader worker travels as a shared-memory segment whose file descriptor
the training process fetches over a fresh socket connection (torch's ``file_descriptor``
strategy): for a mini batch, 8 images plus 8 x (boxes, labels), 24 connections, mmaps and
unpicklings, ~3% of the training process's CPU time an iteration (profiled). Packed, the batch
is two segments (float32: images and boxes; int64: labels), and the training process takes its
tensors back as views:

    worker:   collate_packed(samples)  -> PackedBatch   (the DataLoader's collate_fn)
    training: unpack_batch(packed)     -> (images, targets), as ``data.collate_detection`` gives

The views hold the very values the samples held (copies are exact), in the samples' shapes and
dtypes, contiguous; target dicts keep their keys in order. Nothing else changes, so training on
unpacked batches gives the same weights bit for bit (``tests/engine/test_packing.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

Sample = tuple[torch.Tensor, dict[str, Any]]


@dataclass(frozen=True)
class _Slot:
    """Where a packed tensor lies: its dtype's buffer, offset and shape."""

    dtype: torch.dtype
    offset: int
    shape: tuple[int, ...]


@dataclass
class PackedBatch:
    buffers: dict[torch.dtype, torch.Tensor]  # one flat tensor per dtype
    images: list[_Slot]
    targets: list[dict[str, Any]]  # tensor values replaced by their _Slot

    def pin_memory(self) -> PackedBatch:
        """Called by the DataLoader's pin-memory thread (CUDA): the buffers page-locked."""
        return PackedBatch({dtype: buffer.pin_memory() for dtype, buffer in self.buffers.items()},
                           self.images, self.targets)


def collate_packed(samples: Sequence[Sample]) -> PackedBatch:
    """The samples' tensors copied into one flat shared-memory buffer per dtype."""
    sizes: dict[torch.dtype, int] = {}
    pending: list[tuple[torch.Tensor, _Slot]] = []

    def place(tensor: torch.Tensor) -> _Slot:
        slot = _Slot(tensor.dtype, sizes.get(tensor.dtype, 0), tuple(tensor.shape))
        sizes[tensor.dtype] = slot.offset + tensor.numel()
        pending.append((tensor, slot))
        return slot

    images = [place(image) for image, _ in samples]
    targets = [{key: place(value) if isinstance(value, torch.Tensor) else value
                for key, value in target.items()} for _, target in samples]
    buffers = {dtype: torch.empty(size, dtype=dtype).share_memory_()
               for dtype, size in sizes.items()}
    for tensor, slot in pending:
        buffers[slot.dtype].narrow(0, slot.offset, tensor.numel()).copy_(tensor.reshape(-1))
    return PackedBatch(buffers, images, targets)


def _view(buffers: dict[torch.dtype, torch.Tensor], slot: _Slot) -> torch.Tensor:
    numel = 1
    for side in slot.shape:
        numel *= side
    return buffers[slot.dtype].narrow(0, slot.offset, numel).view(slot.shape)


def unpack_batch(packed: PackedBatch) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """(images, targets) as ``collate_detection`` would have given them, as views."""
    images = [_view(packed.buffers, slot) for slot in packed.images]
    targets = [{key: _view(packed.buffers, value) if isinstance(value, _Slot) else value
                for key, value in target.items()} for target in packed.targets]
    return images, targets
