"""The train stream built from a config: aspect-ratio grouping reaches the sampler."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atss_bench.config import DataConfig
from atss_bench.data.mini import generate_mini_coco
from atss_bench.engine.distributed import DistInfo
from atss_bench.engine.loaders import build_train_batches, build_train_dataset


@pytest.fixture(scope="module")
def mini_train(tmp_path_factory: pytest.TempPathFactory):
    root = generate_mini_coco(tmp_path_factory.mktemp("mini") / "coco", seed=3, num_train=24,
                              num_val=2)
    data = DataConfig(kind="mini", min_size=[64], max_size=128, num_workers=0)
    return build_train_dataset(Path(root), data), data


@pytest.mark.parametrize("grouping", [False, True])
def test_grouping_keeps_each_batch_to_one_orientation(mini_train, grouping: bool) -> None:
    dataset, data = mini_train
    # 17 landscape and 6 portrait images: in batches of 4 the leftovers (1 + 2) never fill a
    # mixed batch, so with grouping every batch has one orientation
    assert sorted(dataset.aspect_ratio_groups()) == [0] * 17 + [1] * 6
    data = data.model_copy(update={"aspect_ratio_grouping": grouping})
    cpu = DistInfo(device=torch.device("cpu"))
    sampler, batches = build_train_batches(dataset, data, images_per_batch=4, seed=0,
                                           start_iter=0, dist_info=cpu)
    orientations = []
    for _ in range(12):
        images, _ = next(batches)  # resized images keep their orientation (squares: portrait)
        orientations.append(len({image.shape[1] >= image.shape[2] for image in images}))
    assert (sampler.group_ids is not None) == grouping
    if grouping:
        assert set(orientations) == {1}
    else:
        assert 2 in orientations  # mixed batches happen without grouping
