"""The decoded-image cache of CocoDetection: the same samples, exactly, as decoding every time.

The engine trains with the cache on (``engine.loaders.TRAIN_IMAGE_CACHE_BYTES``); these tests
compare it with the uncached path over two epochs of the engine's own seeded stream (random
sizes and flips), tensors compared with ``torch.equal``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atss_bench.config import DataConfig
from atss_bench.data import CocoDetection, collate_detection
from atss_bench.engine.distributed import DistInfo
from atss_bench.engine.loaders import TRAIN_IMAGE_CACHE_BYTES, build_train_batches
from tests.data.conftest import HAND_IMAGES


def _train_set(root: Path, cache_bytes: int) -> CocoDetection:
    return CocoDetection(root, "train2017", train=True, min_size=[40, 56, 72], max_size=120,
                         flip_prob=0.5, cache_bytes=cache_bytes)


def _assert_same_batch(a, b) -> None:
    images_a, targets_a = a
    images_b, targets_b = b
    assert len(images_a) == len(images_b)
    for x, y in zip(images_a, images_b):
        assert x.dtype == y.dtype and torch.equal(x, y)
    for x, y in zip(targets_a, targets_b):
        assert x.keys() == y.keys()
        for key in x:
            if torch.is_tensor(x[key]):
                assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


def test_cached_stream_equals_decoded_stream_over_two_epochs(mini_root: Path) -> None:
    decoded, cached = _train_set(mini_root, 0), _train_set(mini_root, 1 << 30)
    assert not decoded.caches_images and cached.caches_images
    data = DataConfig(num_workers=0, aspect_ratio_grouping=False)
    streams = [build_train_batches(ds, data, images_per_batch=4, seed=5, start_iter=0,
                                   dist_info=DistInfo())[1] for ds in (decoded, cached)]
    batches = 2 * len(cached) // 4  # two epochs: the second one served from the cache
    for _ in range(batches):
        _assert_same_batch(next(streams[0]), next(streams[1]))
    assert len(cached._cache) == len(cached)  # every training image decoded once, then kept


def test_cache_only_when_the_whole_split_fits(mini_root: Path) -> None:
    probe = _train_set(mini_root, 0)
    need = probe.decoded_bytes()
    widths = [probe.coco.imgs[i]["width"] for i in probe.ids]
    heights = [probe.coco.imgs[i]["height"] for i in probe.ids]
    assert need == sum(4 * w * h for w, h in zip(widths, heights))
    assert _train_set(mini_root, need).caches_images
    assert not _train_set(mini_root, need - 1).caches_images
    assert need < TRAIN_IMAGE_CACHE_BYTES  # the engine's budget covers such a set


def test_cached_targets_are_copies(mini_root: Path) -> None:
    dataset = _train_set(mini_root, 1 << 30)
    image_id = dataset.ids[0]
    _, boxes, labels = dataset.load_sample(image_id)
    expected_boxes, expected_labels = boxes.clone(), labels.clone()
    boxes.add_(1000)
    labels.fill_(-1)
    image, again_boxes, again_labels = dataset.load_sample(image_id)
    assert torch.equal(again_boxes, expected_boxes) and torch.equal(again_labels, expected_labels)
    assert image is dataset.load_sample(image_id)[0]  # decoded once


def test_every_image_mode_becomes_the_same_rgb_cached_or_not(hand_root: Path) -> None:
    plain = CocoDetection(hand_root, "val2017", train=False, min_size=50, max_size=200)
    cached = CocoDetection(hand_root, "val2017", train=False, min_size=50, max_size=200,
                           cache_bytes=1 << 20)
    assert cached.caches_images and len(plain) == len(HAND_IMAGES)
    for index in range(len(plain)):
        for _ in range(2):  # the second read comes from the cache
            _assert_same_batch(collate_detection([plain[index]]),
                               collate_detection([cached[index]]))
        assert cached.load_image(plain.ids[index]).mode == "RGB"


@pytest.mark.parametrize("cache_bytes", [0, 1 << 30])
def test_dataloader_worker_serves_identical_batches(mini_root: Path, cache_bytes: int) -> None:
    """Through a loader worker process (where the cache lives in training) as in-process."""
    dataset = _train_set(mini_root, cache_bytes)
    reference = _train_set(mini_root, 0)
    stream = build_train_batches(dataset, DataConfig(num_workers=1, aspect_ratio_grouping=False),
                                 images_per_batch=4, seed=2, start_iter=3,
                                 dist_info=DistInfo())[1]
    expected = build_train_batches(reference, DataConfig(num_workers=0,
                                                         aspect_ratio_grouping=False),
                                   images_per_batch=4, seed=2, start_iter=3,
                                   dist_info=DistInfo())[1]
    for _ in range(len(dataset) // 4 + 2):
        _assert_same_batch(next(stream), next(expected))
    del stream
