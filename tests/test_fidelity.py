"""Every row of Tables 1-8 under the full profile resolves to the settings docs/fidelity.md traces
to the official code; a recipe edit that moves one of them fails here, naming the row."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from atss_bench.config import ExperimentConfig
from atss_bench.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]
TABLES = range(1, 9)

ATSS_SCALES = (400, 500, 600, 640, 700, 900, 1000, 1100, 1200, 1300, 1400, 1800)
ATSS_SCALE_RANGES = ((96, 10000), (96, 10000), (64, 10000), (64, 10000), (64, 10000),
                     (0, 10000), (0, 10000), (0, 256), (0, 256), (0, 192), (0, 192), (0, 96))


def settings(config: ExperimentConfig) -> dict[str, Any]:
    """The settings of a row that the paper's numbers depend on, in a comparable form."""
    m, data, train = config.model, config.data, config.train
    assign: tuple[Any, ...] = (m.assign.strategy,)
    if m.assign.strategy == "max_iou":
        assign += (m.assign.fg_iou_thresh, m.assign.bg_iou_thresh, m.assign.center_in_gt)
    elif m.assign.strategy in ("atss", "topk_scale"):
        assign += (m.assign.topk,)
    loss = m.loss
    aug = m.test.aug
    return {
        "assign": assign,
        "start": m.regression.start,
        "anchors": (m.anchors.octave_base_scale, m.anchors.scales_per_octave,
                    tuple(m.anchors.aspect_ratios)),
        "head": (m.head.norm, m.head.centerness, m.head.scalar_per_level, m.head.dcn_in_tower),
        "loss": (loss.regression, loss.regression_weight,
                 loss.smooth_l1_beta if loss.regression == "smooth_l1" else None,
                 loss.weight_by_centerness, loss.normalizer),
        "p6": m.fpn.extra_source,
        "nms": m.test.nms_thresh,
        "backbone": (m.backbone.name, tuple(m.backbone.dcn_stages) if m.backbone.dcn else ()),
        "schedule": (tuple(data.min_size), train.max_iter, tuple(train.steps)),
        "test": (data.test_min_size, tuple(data.test_extra_sizes), aug.flip, aug.max_size,
                 tuple(tuple(r) for r in aug.scale_ranges), aug.merge, aug.vote_thresh,
                 aug.detections_per_img),
    }


# The official ATSS R-50 1x config (configs/atss/atss_R_50_FPN_1x.yaml).
ATSS = {
    "assign": ("atss", 9), "start": "box", "anchors": (8.0, 1, (1.0,)),
    "head": ("gn", "reg", True, False), "loss": ("giou", 2.0, None, True, "mean_pos"),
    "p6": "p5", "nms": 0.6, "backbone": ("resnet50", ()),
    "schedule": ((800,), 90000, (60000, 80000)),
    "test": (800, (), False, None, (), "nms", 0.66, None),
}
# maskrcnn-benchmark's RetinaNet (rpn/retinanet): USE_C5, NMS_TH 0.4, BBOX_REG_BETA 0.11,
# / max(1, num_pos * BBOX_REG_WEIGHT 4.0), no GN / centerness / scalar.
RETINANET = {
    "head": ("none", "none", False, False), "loss": ("smooth_l1", 0.25, 0.11, False, "retinanet"),
    "p6": "c5", "nms": 0.4,
}
IOU = ("max_iou", 0.5, 0.4, False)
IOU_IN_GT = ("max_iou", 0.5, 0.4, True)
GIOU_PER_POSITIVE = ("giou", 2.0, None, False, "mean_pos")
A9 = (4.0, 3, (0.5, 1.0, 2.0))
TABLE8 = {"schedule": ((640, 672, 704, 736, 768, 800), 180000, (120000, 160000))}
OFFICIAL_TTA = (800, ATSS_SCALES, True, 3000, ATSS_SCALE_RANGES, "soft_vote", 0.66, 1000)

EXPECTED: dict[str, dict[str, Any]] = {
    "1/none": {**RETINANET, "assign": IOU},
    "1/gn": {**RETINANET, "assign": IOU, "head": ("gn", "none", False, False)},
    "1/giou": {"assign": IOU, "head": ("gn", "none", False, False), "loss": GIOU_PER_POSITIVE},
    "1/in_gt_box": {"assign": IOU_IN_GT, "head": ("gn", "none", False, False),
                    "loss": GIOU_PER_POSITIVE},
    "1/centerness": {"assign": IOU_IN_GT, "head": ("gn", "reg", False, False)},
    "1/scalar": {"assign": IOU_IN_GT},
    "1/fcos": {"assign": ("fcos",), "start": "point"},
    "2/iou_box": {"assign": IOU_IN_GT},
    "2/iou_point": {"assign": IOU_IN_GT, "start": "point"},
    "2/scale_box": {"assign": ("fcos",)},
    "2/scale_point": {"assign": ("fcos",), "start": "point"},
    "3/retinanet": {"assign": IOU_IN_GT},
    "3/retinanet_atss": {},
    "3/fcos": {"assign": ("fcos",), "start": "point"},
    "3/fcos_center_sampling": {"assign": ("topk_scale", 9), "start": "point"},
    "3/fcos_atss": {"start": "point"},
    **{f"4/k{k}": {"assign": ("atss", k)} for k in range(3, 20, 2)},
    **{f"5/scale{s}": {"anchors": (float(s), 1, (1.0,))} for s in range(5, 10)},
    **{f"6/{name}": {"anchors": (8.0, 1, (ratio,))} for name, ratio in (
        ("ratio1to4", 0.25), ("ratio1to2", 0.5), ("ratio1to1", 1.0), ("ratio2to1", 2.0),
        ("ratio4to1", 4.0))},
    "7/retinanet_a9": {**RETINANET, "assign": IOU, "anchors": A9},
    "7/imprs_a9": {"assign": IOU_IN_GT, "anchors": A9},
    "7/atss_3x3": {"anchors": A9},
    "7/atss_3x1": {"anchors": (4.0, 3, (1.0,))},
    "7/atss_1x3": {"anchors": (8.0, 1, (0.5, 1.0, 2.0))},
    "7/atss_1x1": {},
    "8/r101": {**TABLE8, "backbone": ("resnet101", ())},
    "8/x101_32x8d": {**TABLE8, "backbone": ("resnext101_32x8d", ())},
    "8/x101_64x4d": {**TABLE8, "backbone": ("resnext101_64x4d", ())},
    "8/r101_dcn": {**TABLE8, "backbone": ("resnet101", (3, 4, 5)),
                   "head": ("gn", "reg", True, True)},
    "8/x101_32x8d_dcn": {**TABLE8, "backbone": ("resnext101_32x8d", (4, 5)),
                         "head": ("gn", "reg", True, True)},
    "8/x101_64x4d_dcn": {**TABLE8, "backbone": ("resnext101_64x4d", (4, 5)),
                         "head": ("gn", "reg", True, True)},
    "8/x101_32x8d_dcn_ms": {**TABLE8, "backbone": ("resnext101_32x8d", (4, 5)),
                            "head": ("gn", "reg", True, True), "test": OFFICIAL_TTA},
    "8/x101_64x4d_dcn_ms": {**TABLE8, "backbone": ("resnext101_64x4d", (4, 5)),
                            "head": ("gn", "reg", True, True), "test": OFFICIAL_TTA},
}


def _full_rows() -> dict[str, ExperimentConfig]:
    rows = {}
    for table in TABLES:
        for experiment in load_recipe(REPO / "recipes" / f"table{table}.yaml").experiments("full"):
            rows[f"{table}/{experiment.row_id}"] = experiment.config
    return rows


FULL = _full_rows()


def test_the_paper_has_49_rows_and_each_is_pinned():
    assert len(FULL) == 49
    assert sorted(FULL) == sorted(EXPECTED)


@pytest.mark.parametrize("row", sorted(EXPECTED))
def test_full_profile_row_resolves_to_the_official_settings(row):
    assert settings(FULL[row]) == {**ATSS, **EXPECTED[row]}


@pytest.mark.parametrize("row", sorted(EXPECTED))
def test_full_profile_row_has_the_paper_training_setting(row):
    config = FULL[row]
    bb, data, train = config.model.backbone, config.data, config.train
    assert (bb.weights, bb.frozen_stages, bb.norm, bb.width) == ("imagenet", 2, "frozen_bn", 1.0)
    assert (data.kind, data.train_split, data.val_split, data.max_size) == (
        "coco", "train2017", "val2017", 1333)
    assert (train.optimizer, train.images_per_batch, train.base_lr, train.momentum,
            train.weight_decay, train.weight_decay_bias, train.bias_lr_factor) == (
        "sgd", 16, 0.01, 0.9, 1e-4, 0.0, 2.0)
    assert (train.warmup, train.warmup_factor, train.warmup_iters) == ("constant", 1 / 3, 500)
    head = config.model.head
    assert (head.num_convs, head.channels, head.prior_prob, config.model.fpn.channels) == (
        4, 256, 0.01, 256)
    loss, test = config.model.loss, config.model.test
    assert (loss.focal_alpha, loss.focal_gamma) == (0.25, 2.0)
    assert (test.score_thresh, test.pre_nms_top_n, test.detections_per_img) == (0.05, 1000, 100)


@pytest.mark.parametrize("row", ["1/none", "1/gn", "1/giou", "1/in_gt_box", "7/retinanet_a9"])
def test_cpu_profiles_keep_the_settings_of_their_committed_records(row):
    """The official RetinaNet / Table 1 settings are full-profile overlays: under mini the rows
    keep the loss, P6 and NMS their committed records (results/mini*) were made with."""
    table, row_id = row.split("/")
    recipe = load_recipe(REPO / "recipes" / f"table{table}.yaml")
    (mini,) = recipe.experiments("mini", rows=[row_id])
    model = mini.config.model
    assert (model.fpn.extra_source, model.test.nms_thresh, model.loss.normalizer) == (
        "p5", 0.6, "mean_pos")
    assert model.loss.weight_by_centerness is (row_id in ("giou", "in_gt_box"))


def test_docs_trace_every_row():
    """docs/fidelity.md has one line per row, keyed ``table/row_id``."""
    text = (REPO / "docs" / "fidelity.md").read_text(encoding="utf-8")
    keys = re.findall(r"^\| `(\d/[a-z0-9_]+)` \|", text, flags=re.MULTILINE)
    assert sorted(keys) == sorted(EXPECTED)
