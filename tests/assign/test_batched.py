"""assign_batched equals assign image by image, on both of its paths."""
from __future__ import annotations

import pytest
import torch

from atss_bench.assign import assign, assign_batched, get_assigner
from atss_bench.assign import batched as batched_module
from tests.assign.reference import FCOS_RANGES, STRIDES, make_anchors, random_gt_boxes

RULES = {
    "max_iou": {"center_in_gt": True},
    "fcos": {"strides": STRIDES, "scale_ranges": FCOS_RANGES, "center_sampling_radius": 1.5},
    "topk_scale": {"strides": STRIDES, "scale_ranges": FCOS_RANGES},
    "atss": {},
}


def random_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-4 images with 0-40 GTs; garbage in invalid slots; valid slots first or scattered."""
    generator = torch.Generator().manual_seed(seed)
    batch_size = int(torch.randint(1, 5, (1,), generator=generator))
    counts = torch.randint(0, 41, (batch_size,), generator=generator)
    counts[0] = 0 if seed % 2 else counts[0]
    num_slots = int(counts.max()) + int(torch.randint(0, 3, (1,), generator=generator))
    gt_boxes = random_gt_boxes(generator, batch_size * num_slots, integer=seed % 3 == 0)
    gt_boxes = gt_boxes.reshape(batch_size, num_slots, 4)
    gt_valid = torch.zeros(batch_size, num_slots, dtype=torch.bool)
    for b, count in enumerate(counts.tolist()):
        if seed % 2:
            slots = torch.randperm(num_slots, generator=generator)[:count]
        else:
            slots = torch.arange(count)
        gt_valid[b, slots] = True
    return gt_boxes, gt_valid


def image_by_image(strategy, anchors, napl, gt_boxes, gt_valid, params) -> torch.Tensor:
    rows = []
    for boxes, valid in zip(gt_boxes, gt_valid):
        slots = valid.nonzero()[:, 0]
        result = assign(strategy, anchors, napl, boxes[valid], **params)
        result[result >= 0] = slots[result[result >= 0]]
        rows.append(result)
    return torch.stack(rows)


@pytest.mark.parametrize("strategy", list(RULES))
def test_batched_equals_per_image_on_both_paths(strategy, monkeypatch):
    anchors, napl = make_anchors(1)
    params = RULES[strategy]
    assigner = get_assigner(strategy, params)
    for seed in range(6):
        gt_boxes, gt_valid = random_batch(seed)
        expected = image_by_image(strategy, anchors, napl, gt_boxes, gt_valid, params)
        result = assign_batched(strategy, anchors, napl, gt_boxes, gt_valid, **params)
        assert torch.equal(result, expected), f"seed {seed}"
        padded = batched_module.run_padded(assigner, anchors, napl, gt_boxes, gt_valid, params)
        assert torch.equal(padded, expected), f"seed {seed}"
    monkeypatch.setattr(batched_module, "MAX_PAIRS_PER_CALL", 1)  # one image per padded call
    chunked = batched_module.run_padded(assigner, anchors, napl, gt_boxes, gt_valid, params)
    assert torch.equal(chunked, expected)


def test_batched_with_nine_anchors_per_location():
    anchors, napl = make_anchors(9)
    gt_boxes, gt_valid = random_batch(7)
    for strategy, params in RULES.items():
        if strategy in ("topk_scale", "atss"):
            params = {**params, "num_anchors_per_location": 9}
        expected = image_by_image(strategy, anchors, napl, gt_boxes, gt_valid, params)
        padded = batched_module.run_padded(get_assigner(strategy, params), anchors, napl,
                                           gt_boxes, gt_valid, params)
        assert torch.equal(padded, expected), strategy


def test_empty_batch_and_no_valid_gt():
    anchors, napl = make_anchors(1)
    no_images = torch.zeros(0, 3, 4), torch.zeros(0, 3, dtype=torch.bool)
    empty = assign_batched("atss", anchors, napl, *no_images)
    assert empty.shape == (0, len(anchors))
    none_valid = torch.zeros(2, 3, dtype=torch.bool)
    for path in (batched_module.run_padded, batched_module.run_per_image):
        result = path(get_assigner("atss", {}), anchors, napl, torch.rand(2, 3, 4), none_valid, {})
        assert torch.equal(result, torch.full((2, len(anchors)), -1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    anchors, napl = make_anchors(1)
    gt_boxes, gt_valid = random_batch(3)
    for strategy, params in RULES.items():
        cpu = assign_batched(strategy, anchors, napl, gt_boxes, gt_valid, **params)
        on_cuda = anchors.cuda(), napl, gt_boxes.cuda(), gt_valid.cuda()
        cuda = assign_batched(strategy, *on_cuda, **params)
        assert cuda.device.type == "cuda" and torch.equal(cuda.cpu(), cpu), strategy
