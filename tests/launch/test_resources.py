"""launch.resources: the paper's resources and a time limit for COCO-scale SLURM submissions."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from atss_bench.config import ExperimentConfig
from atss_bench.errors import LaunchError
from atss_bench.launch.resources import (
    COCO_VAL_IMAGES,
    GPU_S_PER_IMAGE,
    GPU_S_PER_TEST_IMAGE,
    MARGIN,
    estimate_time,
    eval_gpu_seconds,
    needs_gpus,
    paper_scale_settings,
    train_gpu_seconds,
)
from atss_bench.launch.settings import ClusterSettings, resolve_settings
from atss_bench.recipes import load_recipe

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLE2 = REPO_ROOT / "recipes" / "table2.yaml"


def config(**sections: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate(sections)


def experiments(profile: str):
    return load_recipe(TABLE2).experiments(profile=profile, seeds=1)


def settings_from(flags: dict[str, Any], tmp_path: Path) -> tuple[ClusterSettings, dict[str, str]]:
    """Settings from flags alone: no config file, no ATSS_BENCH_* variables."""
    return resolve_settings(flags, environ={"XDG_CONFIG_HOME": str(tmp_path)})


def test_the_paper_schedule_costs_what_the_reference_times_say() -> None:
    paper = config()  # the defaults are the paper's: COCO, R-50, 800 px, 90k x 16 images
    assert needs_gpus(paper) and not needs_gpus(config(data={"kind": "mini"}))
    assert train_gpu_seconds(paper) == pytest.approx(90000 * 16 * 0.1)  # 40 GPU-hours
    assert eval_gpu_seconds(paper) == pytest.approx(5000 * 0.055)
    estimate = estimate_time([paper], gpus=8)
    # (144000 s / 8 + 275 s) x 1.5 = 27412.5 s = 456.9 min
    assert (estimate.minutes, estimate.attempts) == (457, 1)
    assert estimate.s_per_iter_per_gpu == pytest.approx(0.2)  # detectron2's 0.200 s/iter
    assert "90000 iterations x 0.20 s on each of 8 GPUs" in estimate.describe()
    assert "457 min per attempt, 1 attempt(s)" in estimate.describe()


def test_size_backbone_dcn_and_test_scales_scale_the_estimate() -> None:
    big = config(data={"min_size": [640, 800], "test_extra_sizes": [400, 1200]},
                 model={"backbone": {"name": "resnet101", "dcn": True},
                        "test": {"aug": {"flip": True}}},
                 train={"max_iter": 180000, "steps": [120000, 160000]})
    size = ((640 / 800) ** 2 + 1.0) / 2
    backbone = (0.286 / 0.209) * (0.342 / 0.261)
    assert train_gpu_seconds(big) == pytest.approx(180000 * 16 * GPU_S_PER_IMAGE * size * backbone)
    scales = 1.0 + (400 / 800) ** 2 + (1200 / 800) ** 2  # every test scale, flipped too
    assert eval_gpu_seconds(big) == pytest.approx(
        COCO_VAL_IMAGES * GPU_S_PER_TEST_IMAGE * scales * 2 * backbone)
    # one limit for the whole array: the slowest run's
    plain = config()
    both = estimate_time([plain, big], gpus=8)
    assert both == estimate_time([big], gpus=8)
    needed_min = (train_gpu_seconds(big) / 8 + eval_gpu_seconds(big)) * MARGIN / 60
    assert (both.minutes, both.attempts) == (math.ceil(needed_min), 1) == (1410, 1)


def test_a_long_schedule_is_split_into_requeued_attempts() -> None:
    long = config(train={"max_iter": 900000, "steps": [600000, 800000]})  # 10x the paper's
    estimate = estimate_time([long], gpus=8)
    total_min = (900000 * 16 * 0.1 / 8 + 275) * 1.5 / 60  # 4506.9 min
    assert estimate.minutes == 1440 and estimate.attempts == 4 and 3 * 1440 < total_min
    assert estimate_time([long], gpus=8, max_attempt_min=600).attempts == 8


def test_full_profile_on_slurm_gets_eight_gpus_the_estimate_and_named_sources(tmp_path) -> None:
    settings, sources = settings_from({"cluster": "slurm"}, tmp_path)
    assert (settings.gpus_per_node, settings.time) == (0, 720)  # the plain defaults
    out, out_sources, estimate = paper_scale_settings(settings, sources, experiments("full"))
    assert (out.gpus_per_node, out.nodes, out.time, out.max_num_timeout) == (8, 1, 457, 3)
    assert out.tasks_per_node == 8
    assert out_sources["gpus_per_node"] == "paper: 8 GPUs on one node"
    assert out_sources["time"].startswith("estimate")
    assert "max_num_timeout" not in out_sources  # one attempt fits: the default 3 requeues stay
    assert estimate is not None and estimate.minutes == 457
    assert sources == {"cluster": "--cluster"}  # the caller's mapping is not modified


def test_given_values_win_and_the_estimate_follows_the_gpus_asked_for(tmp_path) -> None:
    settings, sources = settings_from({"cluster": "slurm", "gpus_per_node": 4, "nodes": 2,
                                       "time": 90}, tmp_path)
    out, out_sources, estimate = paper_scale_settings(settings, sources, experiments("full"))
    assert (out.gpus_per_node, out.nodes, out.time) == (4, 2, 90)
    assert out_sources["time"] == "--time" and out_sources["gpus_per_node"] == "--gpus-per-node"
    # 8 GPUs as 2 x 4: 457 min of work, 90-minute attempts -> 6 attempts, so 6 requeues
    assert estimate is not None and (estimate.gpus, estimate.minutes, estimate.attempts) == \
        (8, 90, 6)
    assert out.max_num_timeout == 6 and out_sources["max_num_timeout"] == "estimate: 6 attempts"
    settings, sources = settings_from({"cluster": "slurm", "gpus_per_node": 2}, tmp_path)
    out, _, estimate = paper_scale_settings(settings, sources, experiments("full"))
    # (144000 / 2 + 275) x 1.5 / 60 = 1806.9 min: two attempts of 24 h
    assert (out.time, out.max_num_timeout, estimate.attempts) == (1440, 3, 2)


def test_cpu_only_full_profile_is_refused_unless_forced(tmp_path) -> None:
    settings, sources = settings_from({"cluster": "slurm", "gpus_per_node": 0}, tmp_path)
    with pytest.raises(LaunchError) as refused:
        paper_scale_settings(settings, sources, experiments("full"))
    message = str(refused.value)
    assert "~40 GPU-hours each" in message and "from --gpus-per-node" in message
    assert "--gpus-per-node 8" in message and "--force-cpu" in message and "\n" not in message
    out, out_sources, estimate = paper_scale_settings(settings, sources, experiments("full"),
                                                      force_cpu=True)
    assert out == settings and estimate is None and out_sources == sources


def test_cpu_only_from_the_config_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[cluster]\ncluster = "slurm"\ngpus_per_node = 0\n')
    settings, sources = resolve_settings({}, environ={}, config_path=path)
    with pytest.raises(LaunchError, match=f"from {path}"):
        paper_scale_settings(settings, sources, experiments("full"))


@pytest.mark.parametrize("cluster,profile", [("slurm", "mini"), ("local", "full"),
                                             ("debug", "full")])
def test_mini_runs_and_other_clusters_keep_the_plain_defaults(tmp_path, cluster, profile) -> None:
    settings, sources = settings_from({"cluster": cluster}, tmp_path)
    out, out_sources, estimate = paper_scale_settings(settings, sources, experiments(profile))
    assert out == settings and out_sources == sources and estimate is None
    assert (out.gpus_per_node, out.time) == (0, 720)
