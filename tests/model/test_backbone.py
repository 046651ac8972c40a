"""Backbone knobs: frozen stages, norm switch, width, DCN, weights (imagenet offline, a path)."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from atss_bench.errors import ConfigError
from atss_bench.model.backbone import (
    RESNETS,
    Backbone,
    ScaledResNet,
    make_norm_layer,
)
from atss_bench.model.dcn import ModulatedDeformConv3x3


def _norms(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def test_frozen_stages_have_no_grad_and_frozen_bn():
    backbone = Backbone("resnet18", width=0.25, frozen_stages=2, norm="frozen_bn")
    body = backbone.body
    for name in ("conv1", "bn1", "layer1"):
        assert all(not p.requires_grad for p in body[name].parameters()), name
    for name in ("layer2", "layer3", "layer4"):
        params = list(body[name].parameters())
        assert params and all(p.requires_grad for p in params), name
    assert not _norms(backbone, nn.BatchNorm2d)
    # stem + 2 per block + 3 downsamples
    assert len(_norms(backbone, FrozenBatchNorm2d)) == 1 + 8 * 2 + 3
    # FrozenBN has buffers only: nothing of a norm layer is trainable.
    assert all(not list(m.parameters()) for m in _norms(backbone, FrozenBatchNorm2d))


@pytest.mark.parametrize("frozen, trainable_from", [(0, "conv1"), (1, "layer1"), (5, None)])
def test_frozen_stage_count(frozen, trainable_from):
    backbone = Backbone("resnet18", width=0.25, frozen_stages=frozen, norm="bn")
    trainable = [n for n, p in backbone.body.named_parameters() if p.requires_grad]
    if trainable_from is None:
        assert trainable == []
    else:
        assert trainable[0].startswith(trainable_from)


def test_frozen_bn_stages_stay_in_eval_mode_when_training():
    backbone = Backbone("resnet18", width=0.25, frozen_stages=2, norm="bn").train()
    assert not backbone.body["bn1"].training
    assert not backbone.body["layer1"].training
    assert backbone.body["layer2"].training
    before = backbone.body["layer1"][0].bn1.running_mean.clone()
    backbone(torch.rand(2, 3, 64, 64))
    assert torch.equal(backbone.body["layer1"][0].bn1.running_mean, before)


def test_gn_switch_changes_norm_types():
    bn = Backbone("resnet18", width=0.25, frozen_stages=0, norm="bn")
    gn = Backbone("resnet18", width=0.25, frozen_stages=0, norm="gn")
    num_bn = len(_norms(bn, nn.BatchNorm2d))
    assert num_bn == 20 and not _norms(bn, nn.GroupNorm)
    assert not _norms(gn, nn.BatchNorm2d) and not _norms(gn, FrozenBatchNorm2d)
    group_norms = _norms(gn, nn.GroupNorm)
    assert len(group_norms) == num_bn
    assert all(g.num_channels % g.num_groups == 0 and g.num_groups <= 32 for g in group_norms)
    assert all(g.weight.requires_grad for g in group_norms)


@pytest.mark.parametrize("name, width, channels", [
    ("resnet18", 1.0, [128, 256, 512]), ("resnet18", 0.25, [32, 64, 128]),
    ("resnet50", 0.25, [128, 256, 512]),
])
def test_output_channels_and_strides(name, width, channels):
    backbone = Backbone(name, width=width, norm="bn", frozen_stages=0)
    assert backbone.out_channels == channels
    out = backbone(torch.rand(1, 3, 64, 96))
    assert list(out) == ["c3", "c4", "c5"]
    assert [tuple(v.shape) for v in out.values()] == [
        (1, channels[0], 8, 12), (1, channels[1], 4, 6), (1, channels[2], 2, 3)]


def test_first_stage_two_returns_c2():
    backbone = Backbone("resnet18", width=0.25, norm="bn", first_stage=2)
    out = backbone(torch.rand(1, 3, 64, 64))
    assert list(out) == ["c2", "c3", "c4", "c5"] and out["c2"].shape[-1] == 16
    assert backbone.out_channels == [16, 32, 64, 128]


def test_resnext_groups():
    net = ScaledResNet(RESNETS["resnext101_32x8d"], 1.0, make_norm_layer("frozen_bn"))
    conv = net.layer1[0].conv2
    assert conv.groups == 32 and conv.out_channels == 256  # 32 groups x 8 channels


def test_imagenet_offline_is_config_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError) as info:
        Backbone("resnet18", weights="imagenet")
    assert "no network" in info.value.hint and "weights: none" in info.value.hint


def test_imagenet_with_width_is_config_error():
    with pytest.raises(ConfigError):
        Backbone("resnet18", weights="imagenet", width=0.5)


def test_weights_path_loads_a_state_dict(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()  # fc.* keys are tolerated
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    backbone = Backbone("resnet18", weights=str(path), frozen_stages=0, norm="frozen_bn").eval()
    assert torch.equal(backbone.body["layer3"][1].conv2.weight, reference.layer3[1].conv2.weight)
    assert torch.equal(backbone.body["bn1"].running_var, reference.bn1.running_var)
    x = torch.rand(1, 3, 64, 64)
    expected = nn.Sequential(*list(reference.eval().children())[:-2])(x)
    assert torch.allclose(backbone(x)["c5"], expected, atol=1e-5)


def test_weights_path_errors(tmp_path):
    with pytest.raises(ConfigError):
        Backbone("resnet18", weights=str(tmp_path / "missing.pth"))
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(ConfigError, match="do not fit"):
        Backbone("resnet18", weights=str(path))


@pytest.mark.parametrize("stages, plain_stages", [((3, 4, 5), ("layer1",)),
                                                 ((4, 5), ("layer1", "layer2"))])
def test_dcn_stages_get_modulated_dcn_with_the_plain_weights(tmp_path, stages, plain_stages):
    """R-50 / R-101 official: res3-res5; ResNeXt official: res4-res5. The pretrained 3x3 weights
    load into the deformable convs; with zero offsets and a saturated sigmoid mask the network
    is the plain one again (mask = sigmoid, not 2 * sigmoid: at logit 0 it would halve)."""
    torch.manual_seed(0)
    plain = Backbone("resnet50", width=0.25, norm="frozen_bn", frozen_stages=0)
    path = tmp_path / "plain.pth"
    torch.save(plain.state_dict(), path)  # "body." prefix stripped, fc missing: both accepted
    dcn = Backbone("resnet50", width=0.25, norm="frozen_bn", frozen_stages=0, dcn_stages=stages,
                   weights=str(path))
    for name in plain_stages:
        assert not any(isinstance(m, ModulatedDeformConv3x3) for m in dcn.body[name].modules())
    deformable = [b.conv2 for s in stages for b in dcn.body[f"layer{s - 1}"]]
    assert deformable and all(isinstance(c, ModulatedDeformConv3x3) for c in deformable)
    first = dcn.body[f"layer{stages[0] - 1}"][0].conv2
    assert first.stride == (2, 2)
    assert torch.equal(first.weight, plain.body[f"layer{stages[0] - 1}"][0].conv2.weight)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for conv in deformable:
            conv.offset_mask.weight.zero_()
            conv.offset_mask.bias.copy_(torch.tensor([0.0] * 18 + [40.0] * 9))
        out_plain, out_dcn = plain.eval()(x), dcn.eval()(x)
    for key in out_plain:
        assert torch.allclose(out_plain[key], out_dcn[key], atol=1e-4), key


def test_dcn_stage_outside_res2_to_res5_is_a_config_error():
    with pytest.raises(ConfigError, match="DCN stage must be in 2..5"):
        Backbone("resnet18", width=0.25, dcn_stages=(1,))
