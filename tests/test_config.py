"""Typed config: strictness, derived values and the run id."""
import math

import pytest
from pydantic import ValidationError

from atss_bench.config import (
    ExperimentConfig, RUNTIME_KEYS, config_hash, default_scale_ranges,
)
from atss_bench.overrides import apply_overrides, default_tree, flatten, validate_config
from atss_bench.errors import ConfigError


def test_defaults_are_the_papers_atss():
    cfg = ExperimentConfig()
    assert cfg.model.assign.strategy == "atss" and cfg.model.assign.topk == 9
    assert cfg.model.anchors.num_anchors_per_location == 1
    assert cfg.model.anchors.octave_base_scale == 8
    assert cfg.model.fpn.strides == [8, 16, 32, 64, 128]
    assert cfg.model.head.norm == "gn" and cfg.model.loss.regression == "giou"
    assert cfg.model.loss.regression_weight == 2.0
    assert (cfg.model.test.score_thresh, cfg.model.test.pre_nms_top_n) == (0.05, 1000)
    assert (cfg.model.test.nms_thresh, cfg.model.test.detections_per_img) == (0.6, 100)
    assert cfg.train.images_per_batch == 16 and cfg.train.base_lr == 0.01
    assert cfg.train.steps == [60000, 80000] and cfg.train.max_iter == 90000


def test_extra_keys_are_refused():
    with pytest.raises(ValidationError):
        ExperimentConfig.model_validate({"model": {"head": {"nrom": "gn"}}})


def test_fcos_scale_ranges_follow_the_strides():
    assert default_scale_ranges([8, 16, 32, 64, 128]) == [
        (0, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)]
    assert default_scale_ranges([4, 8]) == [(0, 32), (32, math.inf)]


def test_num_anchors_per_location_is_scales_times_ratios():
    cfg = validate_config(apply_overrides(default_tree(), {
        "model.anchors": {"scales_per_octave": 3, "aspect_ratios": [0.5, 1.0, 2.0]}}, "t"), "t")
    assert cfg.model.anchors.num_anchors_per_location == 9


def test_switching_strategy_resets_its_parameters():
    tree = apply_overrides(default_tree(), {"model.assign.topk": 5}, "t")
    tree = apply_overrides(tree, {"model.assign.center_in_gt": True,
                                  "model.assign.strategy": "max_iou"}, "t")
    assign = validate_config(tree, "t").model.assign
    assert assign.strategy == "max_iou" and assign.center_in_gt is True


def test_parameter_of_another_strategy_is_an_error():
    with pytest.raises(ConfigError, match="unknown key 'model.assign.topk'"):
        apply_overrides(default_tree(), {"model.assign.strategy": "max_iou",
                                         "model.assign.topk": 9}, "t")


def test_run_id_ignores_key_order():
    a = {"model.head.norm": "none", "train.max_iter": 10}
    b = {"train.max_iter": 10, "model.head.norm": "none"}
    ca = validate_config(apply_overrides(default_tree(), a, "t"), "t")
    cb = validate_config(apply_overrides(default_tree(), b, "t"), "t")
    assert config_hash(ca) == config_hash(cb)
    assert len(config_hash(ca)) == 12


def _perturb(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 + 0.01 if math.isfinite(value) else 1e6
    if isinstance(value, list):
        return value + value[-1:] if value else [1]
    if isinstance(value, tuple):
        return tuple(v * 2 for v in value)
    return None


CHOICES = {"model.backbone.name": "resnet101", "model.backbone.weights": "none",
           "model.backbone.norm": "gn", "model.fpn.extra_source": "c5",
           "model.head.norm": "none", "model.head.centerness": "cls",
           "model.regression.start": "point", "model.loss.regression": "smooth_l1",
           "data.kind": "mini", "data.root": "/elsewhere", "data.train_split": "train2014",
           "data.val_split": "val2014", "train.warmup": "linear", "train.optimizer": "adamw",
           "model.test.aug.merge": "soft_vote", "model.backbone.dcn_stages": [4, 5],
           "model.loss.normalizer": "retinanet", "model.test.threshold_on": "score"}


def test_every_knob_changes_the_run_id_except_runtime_keys():
    base_cfg = ExperimentConfig()
    base = config_hash(base_cfg)
    flat = flatten(base_cfg.model_dump())
    seen = 0
    for key, value in flat.items():
        if key == "model.assign.strategy":
            continue
        new = CHOICES.get(key, _perturb(value))
        if new is None:
            new = 1.0 if value is None else None
        if key == "model.fpn.min_level":
            new = 4
        if key == "model.fpn.max_level":
            new = 6
        if key == "model.head.prior_prob":
            new = 0.02
        if key in ("model.assign.topk",):
            new = 5
        overrides = {key: new}
        if key == "model.test.aug.scale_ranges":  # one range per extra test size
            overrides = {key: [[0.0, 96.0]], "data.test_extra_sizes": [400]}
        tree = apply_overrides(default_tree(), overrides, "t")
        changed = config_hash(validate_config(tree, "t"))
        if key in RUNTIME_KEYS:
            assert changed == base, key
        else:
            assert changed != base, key
        seen += 1
    assert seen > 60


def test_later_knobs_at_their_neutral_value_keep_earlier_run_ids():
    """Knobs added after runs were stored (HASH_NEUTRAL) leave run ids as they were at their
    neutral values: e20eaaefd1df is the default config's run id from before they existed."""
    from atss_bench.config import HASH_NEUTRAL

    neutral = validate_config(apply_overrides(default_tree(), dict(HASH_NEUTRAL), "t"), "t")
    assert config_hash(neutral) == "e20eaaefd1df"
    for key, value in {"train.optimizer": "adamw", "data.mini.category_hue": True,
                       "data.aspect_ratio_grouping": True}.items():
        tree = apply_overrides(default_tree(), {**HASH_NEUTRAL, key: value}, "t")
        assert config_hash(validate_config(tree, "t")) != "e20eaaefd1df", key


# --- value checks: one line naming the key, exit 2 (through `atss-bench show ... --set`) --------

def _show(*sets: str):
    from typer.testing import CliRunner

    from atss_bench.cli.main import app

    args = ["show", "recipes/table2.yaml", "--profile", "mini", "--row", "iou_box",
            "--format", "yaml"]
    for item in sets:
        args += ["--set", item]
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("sets,key,problem", [
    (["seed=-1"], "seed", "greater than or equal to 0"),
    (["seed=4294967296"], "seed", "less than or equal to 4294967295"),
    (["seed=1.5"], "seed", "valid integer"),
    (["seed=yes"], "seed", "valid integer"),
    (["data.mini.seed=-1"], "data.mini.seed", "greater than or equal to 0"),
    (["data.min_size=[0]"], "data.min_size.0", "greater than 0"),
    (["data.min_size=[800, -640]"], "data.min_size.1", "greater than 0"),
    (["data.test_extra_sizes=[0]"], "data.test_extra_sizes.0", "greater than 0"),
    (["data.max_size=0"], "data.max_size", "greater than 0"),
    (["data.test_min_size=-1"], "data.test_min_size", "greater than 0"),
    (["data.max_size=100000000000"], "data.max_size", "less than or equal to 10000"),
    (["data.min_size=[800, 10001]"], "data.min_size.1", "less than or equal to 10000"),
    (["data.mini.num_train=100000000000"], "data.mini.num_train", "less than or equal to 100000"),
    (["data.mini.num_val=100001"], "data.mini.num_val", "less than or equal to 100000"),
    (["model.anchors.aspect_ratios=[.nan]"], "model.anchors.aspect_ratios.0", "finite number"),
    (["model.anchors.aspect_ratios=[1, .inf]"], "model.anchors.aspect_ratios.1", "finite"),
    (["train.base_lr=.inf"], "train.base_lr", "finite number"),
    (["train.base_lr=.nan"], "train.base_lr", "finite number"),
    (["model.loss.focal_gamma=.inf"], "model.loss.focal_gamma", "finite number"),
    (["model.regression.box_coder_weights=[10, 10, .nan, 5]"],
     "model.regression.box_coder_weights.2", "finite number"),
    (["model.assign.strategy=fcos", "model.assign.scale_ranges=[[0, 64], [64, .nan]]"],
     "model.assign.scale_ranges", "0 <= low < high"),
    (["model.assign.strategy=fcos", "model.assign.scale_ranges=[[.inf, .inf]]"],
     "model.assign.scale_ranges.0.0", "finite number"),
    (["model.assign.strategy=topk_scale", "model.assign.scale_ranges=[[64, 0]]"],
     "model.assign.scale_ranges", "0 <= low < high"),
])
def test_bad_values_are_one_line_errors_naming_the_key(sets, key, problem):
    result = _show(*sets)
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert len(text.splitlines()) == 1 and text.startswith("error:"), text
    assert f": {key}: " in text and problem in text, text


def test_yaml_1_2_numbers_and_the_meaningful_infinity_are_accepted():
    result = _show("seed=010", "data.mini.seed=0o10", "train.max_iter=0x10",
                   "model.assign.strategy=fcos",
                   "model.assign.scale_ranges=[[0, 64], [64, 128], [128, .inf]]")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\nseed: 10\n" in out and "    seed: 8\n" in out and "max_iter: 16\n" in out
    assert "- 128.0\n      - .inf\n" in out  # the open upper end of the last scale range
    top = _show("seed=4294967295")
    assert top.exit_code == 0 and "\nseed: 4294967295\n" in top.output
