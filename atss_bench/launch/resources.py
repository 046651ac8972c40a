"""Paper-scale SLURM submissions: the paper's resources by default, a time limit from the schedule.

A run "needs GPUs" when it trains on real COCO (``data.kind == "coco"``: the full profile and any
profile of that size); the synthetic mini profiles keep the plain defaults (``launch.settings``).
For such runs, on ``--cluster slurm``, every setting nobody gave (flag, ``ATSS_BENCH_*`` or config
file) is filled in here:

- ``gpus_per_node = 8`` on one node: the official ATSS training command
  (``--nproc_per_node=8``, 16 images per iteration, 2 per GPU).
- ``time``: minutes per attempt, estimated below; ``max_num_timeout``: enough time-out requeues
  for the whole schedule (each attempt resumes from the last checkpoint).

A CPU-only submission of such runs is refused (``LaunchError``: months of CPU training) unless
forced.

The estimate. One reference point: detectron2's model zoo times RetinaNet R50-FPN 1x, the
network ATSS builds on, at 0.200 s per iteration of 16 images at 800 px on 8 V100s, i.e.
**0.1 GPU-second per training image** (``GPU_S_PER_IMAGE``), and 0.055 s per test image on one
V100. A run's training time is then ``max_iter x images_per_batch x 0.1 s x (size / 800)^2 x
backbone factor / GPUs``; the backbone factors are the same model zoo's per-iteration times
relative to R50-FPN (Faster R-CNN R101-FPN 0.286 / 0.209, X101-32x8d-FPN 0.638 / 0.209; deformable
convolutions in c3-c5: 0.342 / 0.261). Evaluation adds every test scale (and flip) of the val
images on one GPU. The total is multiplied by ``MARGIN`` (slower or shared GPUs, data loading,
checkpoints) and split into attempts of at most ``MAX_ATTEMPT_MIN`` minutes.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from atss_bench.config import ExperimentConfig
from atss_bench.errors import LaunchError
from atss_bench.launch.settings import ClusterSettings
from atss_bench.recipes import Experiment

PAPER_GPUS_PER_NODE = 8  # official ATSS: torch.distributed.launch --nproc_per_node=8
PAPER_SOURCE = "paper: 8 GPUs on one node"
GPU_S_PER_IMAGE = 0.1  # detectron2 RetinaNet R50-FPN 1x: 0.200 s/iter x 8 V100 / 16 images
GPU_S_PER_TEST_IMAGE = 0.055  # the same model zoo: inference time per image, one V100
REFERENCE_SIZE = 800  # the shorter side those times were measured at
BACKBONE_FACTOR = {  # per-iteration time relative to R-50 (detectron2 model zoo, see above)
    "resnet101": 0.286 / 0.209,
    "resnext101_32x8d": 0.638 / 0.209,
    "resnext101_64x4d": 0.638 / 0.209,  # not in the zoo; about the FLOPs of 32x8d
}
DCN_FACTOR = 0.342 / 0.261
MARGIN = 1.5
MAX_ATTEMPT_MIN = 24 * 60  # a common partition limit; longer schedules requeue
COCO_VAL_IMAGES = 5000
MIN_TIMEOUT_REQUEUES = ClusterSettings.model_fields["max_num_timeout"].default


def needs_gpus(config: ExperimentConfig) -> bool:
    """Does this run train at COCO scale (the full profile), far beyond a CPU?"""
    return config.data.kind == "coco"


def _backbone_factor(config: ExperimentConfig) -> float:
    backbone = config.model.backbone
    return BACKBONE_FACTOR.get(backbone.name, 1.0) * (DCN_FACTOR if backbone.dcn else 1.0)


def _scale(sizes: Sequence[int]) -> float:
    """Mean pixel count of these shorter sides relative to 800 px."""
    return sum((s / REFERENCE_SIZE) ** 2 for s in sizes) / len(sizes)


def train_gpu_seconds(config: ExperimentConfig) -> float:
    """GPU-seconds to train one run (the whole schedule) on the reference GPU."""
    train = config.train
    return (train.max_iter * train.images_per_batch * GPU_S_PER_IMAGE
            * _scale(config.data.min_size) * _backbone_factor(config))


def eval_gpu_seconds(config: ExperimentConfig) -> float:
    """Seconds of one GPU for the final evaluation: every test scale, twice with flip."""
    data = config.data
    images = data.val_images or COCO_VAL_IMAGES
    scales = _scale([data.test_min_size, *data.test_extra_sizes]) \
        * (1 + len(data.test_extra_sizes))
    flip = 2 if config.model.test.aug.flip and data.test_extra_sizes else 1
    return images * GPU_S_PER_TEST_IMAGE * scales * flip * _backbone_factor(config)


@dataclass(frozen=True)
class TimeEstimate:
    """The slowest run's wall time on ``gpus`` GPUs and the time limit derived from it."""

    train_s: float  # training, spread over the GPUs
    eval_s: float  # evaluation, on one GPU
    gpus: int
    iterations: int
    images_per_iter: int
    minutes: int  # per attempt: the whole run with MARGIN, at most MAX_ATTEMPT_MIN
    attempts: int  # attempts of ``minutes`` that cover the run with MARGIN

    @property
    def factor(self) -> float:
        """Image size and backbone, relative to R-50 at 800 px."""
        return self.train_s * self.gpus / (self.iterations * self.images_per_iter
                                            * GPU_S_PER_IMAGE)

    @property
    def s_per_iter_per_gpu(self) -> float:
        return self.train_s / self.iterations

    def describe(self) -> str:
        return (f"{self.iterations} iterations x {self.s_per_iter_per_gpu:.2f} s on each of "
                f"{self.gpus} GPUs ({self.images_per_iter} images/iteration x {GPU_S_PER_IMAGE} "
                f"GPU-s per 800-px image on a V100, x{self.factor:.2f} for image size and "
                f"backbone) = {self.train_s / 3600:.1f} h training + {self.eval_s / 3600:.1f} h "
                f"evaluation; x{MARGIN} margin = {self.minutes} min per attempt, "
                f"{self.attempts} attempt(s) (a time-out requeues and resumes)")


def estimate_time(configs: Sequence[ExperimentConfig], gpus: int,
                  max_attempt_min: int = MAX_ATTEMPT_MIN) -> TimeEstimate:
    """The time limit that fits the slowest of these runs (one limit serves the whole array)."""
    slowest = max(configs, key=lambda c: train_gpu_seconds(c) + eval_gpu_seconds(c))
    train_s = train_gpu_seconds(slowest) / gpus
    eval_s = eval_gpu_seconds(slowest)
    needed_min = math.ceil((train_s + eval_s) * MARGIN / 60)
    minutes = min(needed_min, max_attempt_min)
    return TimeEstimate(train_s=train_s, eval_s=eval_s, gpus=gpus,
                        iterations=slowest.train.max_iter,
                        images_per_iter=slowest.train.images_per_batch, minutes=minutes,
                        attempts=math.ceil(needed_min / minutes))


def _cpu_refusal(sources: Mapping[str, str], configs: Sequence[ExperimentConfig]) -> LaunchError:
    gpu_hours = max(train_gpu_seconds(c) for c in configs) / 3600
    where = sources.get("gpus_per_node", "default")
    return LaunchError(
        f"these runs train on COCO at the paper's scale (~{gpu_hours:.0f} GPU-hours each): "
        f"a CPU-only SLURM job (gpus_per_node = 0, from {where}) would take months",
        hint=f"ask for GPUs (--gpus-per-node {PAPER_GPUS_PER_NODE}, the paper's), or pass "
             "--force-cpu to submit anyway")


def paper_scale_settings(
    settings: ClusterSettings,
    sources: Mapping[str, str],
    experiments: Sequence[Experiment],
    *,
    force_cpu: bool = False,
) -> tuple[ClusterSettings, dict[str, str], TimeEstimate | None]:
    """Fill in the paper's resources for COCO-scale runs on SLURM (see the module doc).

    Only fields that no source gave are changed; ``sources`` names where each filled-in value came
    from. Returns the settings, their sources and the estimate used (None when none applies: other
    clusters, mini-scale runs, or a forced CPU-only submission)."""
    out = dict(sources)
    configs = [exp.config for exp in experiments if needs_gpus(exp.config)]
    if settings.cluster != "slurm" or not configs:
        return settings, out, None
    update: dict[str, Any] = {}
    if force_cpu and "gpus_per_node" not in sources:
        return settings, out, None  # CPU-only on purpose: the plain defaults
    if "gpus_per_node" not in sources:
        update["gpus_per_node"] = PAPER_GPUS_PER_NODE
        out["gpus_per_node"] = PAPER_SOURCE
    gpus_per_node = update.get("gpus_per_node", settings.gpus_per_node)
    if gpus_per_node == 0:
        if not force_cpu:
            raise _cpu_refusal(sources, configs)
        return settings, out, None
    limit = settings.time if "time" in sources else MAX_ATTEMPT_MIN
    estimate = estimate_time(configs, gpus_per_node * settings.nodes, limit)
    if "time" not in sources:
        update["time"] = estimate.minutes
        out["time"] = "estimate, see below"
    if "max_num_timeout" not in sources and estimate.attempts > MIN_TIMEOUT_REQUEUES:
        update["max_num_timeout"] = estimate.attempts  # the requeues needed and one spare
        out["max_num_timeout"] = f"estimate: {estimate.attempts} attempts"
    merged = ClusterSettings.model_validate({**settings.model_dump(), **update})
    return merged, out, estimate
