"""A profile that makes any recipe row train and evaluate in seconds on one CPU core."""
from __future__ import annotations

from pathlib import Path

TINY_PROFILE = """\
name: {name}
description: "seconds-long CPU runs for the launch and SLURM tests"
set:
  data: {{kind: mini, min_size: [64], max_size: 64, test_min_size: 64, flip_prob: 0.5,
          num_workers: 0, val_images: 4}}
  data.mini: {{seed: 0, num_train: 12, num_val: 4}}
  model.backbone: {{name: resnet18, weights: none, frozen_stages: 0, norm: bn, width: 0.25}}
  model.fpn: {{channels: 16, min_level: 3, max_level: 5}}
  model.head: {{channels: 16, num_convs: 1}}
  train: {{images_per_batch: 4, base_lr: 0.01, warmup: linear, warmup_factor: 0.1,
           warmup_iters: 3, steps: [{step}], max_iter: {max_iter}, amp: false,
           checkpoint_period: {period}}}
"""


def write_tiny_profile(folder: Path, name: str = "tiny", max_iter: int = 8,
                       checkpoint_period: int = 4) -> Path:
    """``folder/<name>.yaml``; pass its path as ``--profile``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(TINY_PROFILE.format(name=name, max_iter=max_iter, period=checkpoint_period,
                                        step=max(1, max_iter * 3 // 4)))
    return path
