"""The whole detector: every Table 1, 2, 3 and 7 variant trains; inference; config plumbing."""
from __future__ import annotations

import copy
import math
import pickle
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from atss_bench.config import ModelConfig, default_scale_ranges
from atss_bench.errors import ConfigError
from atss_bench.model import DenseDetector, build_assigner, build_detector
from atss_bench.model.dcn import ModulatedDeformConv3x3
from atss_bench.recipes import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
# The mini profile, shrunk further so that 22 variants x 5 steps take seconds.
TINY = {"model.backbone.width": 0.25, "model.fpn.channels": 32, "model.head.channels": 32}
NUM_CLASSES = 3


def _experiments(table: int, **overrides):
    recipe = load_recipe(RECIPES / f"table{table}.yaml")
    return recipe.experiments(profile="mini", overrides={**TINY, **overrides})


VARIANTS = [(table, e.row_id) for table in (1, 2, 3, 7) for e in _experiments(table)]


def _model(table: int, row_id: str, **overrides) -> tuple[DenseDetector, ModelConfig]:
    (experiment,) = [e for e in _experiments(table, **overrides) if e.row_id == row_id]
    torch.manual_seed(0)
    return build_detector(experiment.config.model, NUM_CLASSES), experiment.config.model


def _image(height: int = 128, width: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


TARGET = {"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0], [60.0, 40.0, 120.0, 100.0]]),
          "labels": torch.tensor([1, 2])}


@pytest.mark.parametrize("table, row_id", VARIANTS, ids=[f"t{t}-{r}" for t, r in VARIANTS])
def test_variant_trains_with_decreasing_finite_losses(table, row_id):
    model, config = _model(table, row_id)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    totals = []
    for _ in range(5):
        losses = model([_image()], [TARGET])
        expected = {"loss_cls", "loss_reg"} | (
            {"loss_centerness"} if config.head.centerness != "none" else set())
        assert set(losses) == expected
        assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert totals[-1] < totals[0], totals


def test_eval_returns_at_most_detections_per_img_in_image_coordinates():
    model, _ = _model(3, "fcos_atss", **{"model.test.score_thresh": 0.0,
                                         "model.test.detections_per_img": 7})
    model.eval()
    sizes = [(128, 160), (90, 100)]
    with torch.no_grad():
        outputs = model([_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)])
    assert len(outputs) == 2
    for out, (height, width) in zip(outputs, sizes):
        assert set(out) == {"boxes", "scores", "labels"}
        assert out["boxes"].shape == (7, 4) and out["scores"].shape == (7,)
        assert out["labels"].dtype == torch.int64
        assert out["labels"].min() >= 0 and out["labels"].max() < NUM_CLASSES
        boxes = out["boxes"]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert torch.all(out["scores"][:-1] >= out["scores"][1:])


def test_eval_with_default_threshold_never_exceeds_limit():
    model, config = _model(7, "retinanet_a9")
    model.eval()
    with torch.no_grad():
        (out,) = model([_image()])
    assert len(out["boxes"]) <= config.test.detections_per_img
    assert out["boxes"].shape[1:] == (4,)


def test_nine_anchors_per_location_shapes():
    model, config = _model(7, "atss_3x3")
    assert config.anchors.num_anchors_per_location == 9
    batch, _ = model.preprocess([_image(128, 160)])
    features = model.fpn(model.backbone(batch))
    outputs = model.head(features)
    anchors, strides = model.anchors_per_level([f.shape[-2:] for f in features], batch.device)
    for level, feature in enumerate(features):
        locations = feature.shape[-2] * feature.shape[-1]
        assert anchors[level].shape == (locations * 9, 4)
        assert outputs.cls[level].shape == (1, locations * 9, NUM_CLASSES)
        assert outputs.reg[level].shape == (1, locations * 9, 4)
        assert outputs.centerness[level].shape == (1, locations * 9)
        assert torch.all(strides[level] == 2 ** (3 + level))


def test_preprocess_normalises_and_pads_to_32():
    model, _ = _model(3, "fcos_atss")
    images = [torch.full((3, 50, 70), 0.5), torch.full((3, 64, 33), 0.5)]
    batch, sizes = model.preprocess(images)
    assert batch.shape == (2, 3, 64, 96) and sizes == [(50, 70), (64, 33)]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(batch[0, :, 10, 10], (0.5 - mean) / std)
    assert torch.all(batch[0, :, 50:] == 0) and torch.all(batch[1, :, :, 33:] == 0)


def test_image_without_objects_trains():
    model, _ = _model(3, "fcos_atss")
    model.train()
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}
    losses = model([_image(), _image(seed=1)], [empty, TARGET])
    assert all(torch.isfinite(v) for v in losses.values())
    losses = model([_image()], [empty])
    assert losses["loss_reg"].item() == 0.0 and losses["loss_cls"].item() > 0
    sum(losses.values()).backward()


def test_train_mode_needs_targets():
    model, _ = _model(3, "fcos_atss")
    with pytest.raises(ValueError):
        model.train()([_image()])


def test_build_assigner_params():
    (_, config) = _model(3, "fcos")
    assigner = build_assigner(config)
    assert assigner.strategy == "fcos"
    assert assigner.params["scale_ranges"] == default_scale_ranges([8, 16, 32, 64, 128])
    assert list(assigner.params["strides"]) == [8, 16, 32, 64, 128]
    (_, config) = _model(3, "fcos_center_sampling")
    assert build_assigner(config).params["num_anchors_per_location"] == 1
    (_, config) = _model(7, "atss_3x3")
    assert dict(build_assigner(config).params) == {"topk": 9, "num_anchors_per_location": 9}
    (_, config) = _model(1, "in_gt_box")
    params = build_assigner(config).params
    assert params["center_in_gt"] is True and params["fg_iou_thresh"] == 0.5
    ranges = [(0.0, 32.0), (32.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, math.inf)]
    config = ModelConfig.model_validate({"assign": {"strategy": "fcos", "scale_ranges": ranges}})
    assert build_assigner(config).params["scale_ranges"] == ranges


def test_table_switches_reach_the_modules():
    none_model, _ = _model(1, "none")
    scalar_model, _ = _model(1, "scalar")
    assert none_model.head.scales is None and none_model.head.centerness is None
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in none_model.head.modules())
    assert len(scalar_model.head.scales) == 5 and scalar_model.head.centerness is not None
    assert any(isinstance(m, torch.nn.GroupNorm) for m in scalar_model.head.modules())
    assert none_model.loss_settings.regression == "smooth_l1"
    assert scalar_model.loss_settings.regression == "giou"
    point_model, _ = _model(2, "iou_point")
    assert point_model.coder.start == "point" and point_model.assigner.strategy == "max_iou"


def test_build_detector_imagenet_offline_is_config_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    config = ModelConfig.model_validate({"backbone": {"name": "resnet18", "weights": "imagenet"}})
    with pytest.raises(ConfigError, match="ImageNet"):
        build_detector(config, NUM_CLASSES)


@pytest.mark.parametrize("overrides", [
    # point regression with #A = 3: one ltrb per anchor, all from the location centre
    {"model.regression.start": "point", "model.anchors.aspect_ratios": [0.5, 1.0, 2.0]},
    # P2-P6 for small images, P6 from C5
    {"model.fpn.min_level": 2, "model.fpn.max_level": 6, "model.fpn.extra_source": "c5"},
])
def test_other_layouts_train(overrides):
    model, config = _model(3, "fcos_atss", **overrides)
    assert model.anchor_settings.strides == tuple(config.fpn.strides)
    losses = model.train()([_image()], [TARGET])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_model_can_be_copied_and_pickled():
    model, _ = _model(3, "fcos_atss")
    model.eval()
    with torch.no_grad():
        model([_image()])  # fills the anchor cache
        clone = pickle.loads(pickle.dumps(copy.deepcopy(model)))
        (a,), (b,) = model([_image()]), clone([_image()])
    assert torch.equal(a["scores"], b["scores"])


def test_official_retinanet_overlay_reaches_the_modules():
    """Table 1 "none" with its full-profile overlay (P6 from C5, NMS 0.4, RetinaNet loss)."""
    overlay = load_recipe(RECIPES / "table1.yaml").row("none").profiles["full"]
    model, _ = _model(1, "none", **overlay)
    assert model.fpn.fpn.extra_blocks.use_P5 is False
    assert model.fpn.fpn.extra_blocks.p6.in_channels == model.backbone.out_channels[-1]
    assert model.inference_settings.nms_thresh == 0.4
    settings = model.loss_settings
    assert (settings.regression, settings.regression_weight, settings.smooth_l1_beta,
            settings.normalizer) == ("smooth_l1", 0.25, 0.11, "retinanet")
    losses = model.train()([_image()], [TARGET])
    assert set(losses) == {"loss_cls", "loss_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("row_id, deformable_stages", [("r101_dcn", ("layer2", "layer3", "layer4")),
                                                      ("x101_32x8d_dcn", ("layer3", "layer4"))])
def test_table8_dcn_rows_build_dcn_stages_and_tower_and_train(row_id, deformable_stages):
    (experiment,) = [e for e in _experiments(8, **{"model.backbone.name": "resnet18"})
                     if e.row_id == row_id]
    torch.manual_seed(0)
    model = build_detector(experiment.config.model, NUM_CLASSES)
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        has_dcn = any(isinstance(m, ModulatedDeformConv3x3)
                      for m in model.backbone.body[stage].modules())
        assert has_dcn == (stage in deformable_stages), stage
    for tower in (model.head.cls_tower, model.head.reg_tower):
        convs = [m for m in tower if isinstance(m, (torch.nn.Conv2d, ModulatedDeformConv3x3))]
        assert isinstance(convs[-1], ModulatedDeformConv3x3)
        assert not any(isinstance(c, ModulatedDeformConv3x3) for c in convs[:-1])
    losses = model.train()([_image()], [TARGET])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
