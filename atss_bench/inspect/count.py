"""Run one sample-selection rule over a whole split and count each GT's positives.

Images are grouped by padded size: one anchor set per group, as the detector builds it for a
batch padded to that size. Within a group everything is vectorised except the rule itself, which
goes through the training assigner (``model.targets.Assigner``, i.e. ``assign.assign_batched``,
whose CPU path is one call per image anyway) once per image, on the anchors that can matter for
that image (``inspect.prune``: the same positives as on every anchor, at a fraction of the
anchor x GT pairs). An image's answer equals ``assign.assign`` on that image alone.

The per-image tensors are small, so torch runs single-threaded here by default: on a shared
machine (2 cores, busy) intra-op threads made the same work 7-35x slower
(benchmarks/bench_inspect.py --loop-threads 0 shows it on the plain loop).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from atss_bench.inspect.anchors import ImageAnchors, anchors_for_padded_size, padded_size
from atss_bench.inspect.gt import SplitGroundTruth
from atss_bench.inspect.prune import anchors_in_rectangles, location_rectangles
from atss_bench.model.detector import AnchorSettings
from atss_bench.model.targets import Assigner

# A prediction-aware rule's inputs for one image: (its position in the split, its anchors) ->
# {gt_labels [1, M], pred_scores [1, N, C], pred_boxes [1, N, 4]} (``inspect.trained``).
RuleInputs = Callable[[int, ImageAnchors], dict[str, Tensor]]

# Images handled together by the vectorised steps, to bound their memory (the 5k-image
# benchmark: +20 MB over the loaded annotations).
IMAGES_PER_GROUP = 256


@dataclass(frozen=True)
class PositiveCounts:
    """Per GT of a split: ``per_level`` int64 [G, L] positives on each pyramid level and
    ``iou_sum`` float64 [G] the sum of its positives' IoU with it; and the positives themselves,
    ``positive_pairs`` int64 [P, 2] (GT index, anchor index), sorted by GT then anchor. The anchor
    index is into the anchors of the GT's image (``anchors_for_padded_size`` of its padded size),
    so the GT, which belongs to one image, and the anchor index name an (image, anchor) location
    (``inspect.agreement`` compares two rules' pairs)."""

    per_level: np.ndarray
    iou_sum: np.ndarray
    positive_pairs: np.ndarray

    @property
    def positives(self) -> np.ndarray:  # [G]
        return self.per_level.sum(axis=1)


@dataclass(frozen=True)
class GroupPositives:
    """The positives of a group of images: one entry per positive anchor (P of them).

    ``image`` index into the split, ``anchor`` index into ``anchors.anchors``, ``gt`` split-wide
    GT index, ``iou`` float32 IoU of the anchor with that GT.
    """

    anchors: ImageAnchors
    image: Tensor
    anchor: Tensor
    gt: Tensor
    iou: Tensor


def group_by_padded_size(gt: SplitGroundTruth, size_divisibility: int
                         ) -> dict[tuple[int, int], np.ndarray]:
    """{padded (height, width): indices of the images with at least one GT}, sizes sorted."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i in np.flatnonzero(np.diff(gt.gt_offsets) > 0).tolist():
        height, width = (int(v) for v in gt.sizes[i])
        groups.setdefault(padded_size(height, width, size_divisibility), []).append(i)
    return {size: np.array(groups[size], dtype=np.int64) for size in sorted(groups)}


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of boxes1[i] with boxes2[i]: [P, 4] x [P, 4] -> [P]."""
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(dim=1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(dim=1)
    return inter / (area1 + area2 - inter)


def assign_group(gt: SplitGroundTruth, images: np.ndarray, anchors: ImageAnchors,
                 assigner: Assigner, prune: bool = True,
                 inputs: RuleInputs | None = None) -> GroupPositives:
    """Assign each of ``images`` (all padded to the size of ``anchors``, each with GTs);
    ``inputs``: what a prediction-aware rule gets for an image (every anchor kept then)."""
    first, last = gt.gt_offsets[images], gt.gt_offsets[images + 1]
    prune = prune and inputs is None
    kept = _kept_anchors(gt, first, last, anchors, assigner) if prune else None
    matched = []  # per image: [N_i], N_i its kept anchors (or all of them)
    for i, (a, b) in enumerate(zip(first.tolist(), last.tolist())):
        boxes, counts = anchors.anchors, anchors.num_anchors_per_level
        if kept is not None:
            index, offsets, level_counts = kept
            boxes, counts = boxes[index[offsets[i]:offsets[i + 1]]], level_counts[i]
        valid = torch.ones((1, b - a), dtype=torch.bool)
        extra = inputs(int(images[i]), anchors) if inputs is not None else {}
        matched.append(assigner(boxes, counts, gt.boxes[a:b][None], valid, **extra)[0])
    lengths = torch.tensor([len(m) for m in matched])
    offsets = torch.cat((torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)))
    matched_all = torch.cat(matched)
    position = (matched_all >= 0).nonzero()[:, 0]  # [P] into the concatenation
    image = torch.searchsorted(offsets[1:], position, right=True)  # [P] 0 .. len(images) - 1
    anchor = position - offsets[image] if kept is None else kept[0][position]
    gt_index = torch.from_numpy(first)[image] + matched_all[position]
    iou = paired_iou(anchors.anchors[anchor], gt.boxes[gt_index])
    return GroupPositives(anchors, torch.from_numpy(images)[image], anchor, gt_index, iou)


def _kept_anchors(gt: SplitGroundTruth, first: np.ndarray, last: np.ndarray,
                  anchors: ImageAnchors, assigner: Assigner
                  ) -> tuple[Tensor, Tensor, list[list[int]]] | None:
    """``inspect.prune`` for each image: (anchor indices, offsets per image, anchors per level
    per image); None when the rule keeps every anchor."""
    rows = torch.from_numpy(np.concatenate([np.arange(a, b) for a, b in zip(first, last)]))
    rects = location_rectangles(assigner.strategy, assigner.params, gt.boxes[rows], anchors)
    if rects is None:
        return None
    num_images, num_levels = len(first), len(anchors.strides)
    owner = torch.repeat_interleave(torch.arange(num_images), torch.from_numpy(last - first))
    index, offsets = anchors_in_rectangles(rects, owner, num_images, anchors)
    index_owner = torch.repeat_interleave(torch.arange(num_images), torch.diff(offsets))
    level_counts = torch.bincount(index_owner * num_levels + anchors.levels[index],
                                  minlength=num_images * num_levels)
    return index, offsets, level_counts.view(num_images, num_levels).tolist()


def iterate_groups(gt: SplitGroundTruth, assigner: Assigner, anchor_settings: AnchorSettings,
                   size_divisibility: int, *, prune: bool = True,
                   images_per_group: int = IMAGES_PER_GROUP,
                   inputs: RuleInputs | None = None) -> Iterator[GroupPositives]:
    """The positives of every image with GTs, one padded size (and a bounded number of images,
    for memory) at a time."""
    for size, members in group_by_padded_size(gt, size_divisibility).items():
        anchors = anchors_for_padded_size(anchor_settings, size)
        for start in range(0, len(members), images_per_group):
            yield assign_group(gt, members[start:start + images_per_group], anchors, assigner,
                               prune, inputs)


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` intra-op threads (None: leave torch's setting)."""
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def count_positives(gt: SplitGroundTruth, assigner: Assigner, anchor_settings: AnchorSettings,
                    size_divisibility: int, *, prune: bool = True,
                    num_threads: int | None = 1,
                    inputs: RuleInputs | None = None) -> PositiveCounts:
    """Every GT's positives per level under ``assigner`` (see the module docstring);
    ``inputs`` for a prediction-aware rule (``assign_group``)."""
    num_levels = len(anchor_settings.strides)
    per_level = torch.zeros(gt.num_gt * num_levels, dtype=torch.int64)
    iou_sum = torch.zeros(gt.num_gt, dtype=torch.float64)
    pairs = [torch.zeros((0, 2), dtype=torch.int64)]
    with torch_threads(num_threads):
        for group in iterate_groups(gt, assigner, anchor_settings, size_divisibility,
                                    prune=prune, inputs=inputs):
            level = group.anchors.levels[group.anchor]
            per_level.index_add_(0, group.gt * num_levels + level, torch.ones_like(group.gt))
            iou_sum.index_add_(0, group.gt, group.iou.double())
            pairs.append(torch.stack((group.gt, group.anchor), dim=1).long())
    return PositiveCounts(per_level.reshape(gt.num_gt, num_levels).numpy(), iou_sum.numpy(),
                          sort_pairs(torch.cat(pairs).numpy()))


def sort_pairs(pairs: np.ndarray) -> np.ndarray:
    """(GT, anchor) pairs [P, 2] sorted by GT, then anchor."""
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
