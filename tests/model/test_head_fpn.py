"""FPN levels and the dense head: shapes, layout, per-level scalars, centerness placement, init."""
from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from atss_bench.errors import ConfigError
from atss_bench.model.fpn import FPN
from atss_bench.model.head import DenseHead, Scale, flatten_level


def _features(channels: list[int], first: int, size: int = 64) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((f"c{level}", torch.rand(1, ch, size >> level, size >> level))
                       for level, ch in zip(range(first, 6), channels))


@pytest.mark.parametrize("min_level, max_level", [(3, 7), (2, 6), (3, 5), (4, 4)])
def test_fpn_levels(min_level, max_level):
    in_channels = [8, 16, 32, 64][min_level - 2:]
    fpn = FPN(in_channels, 16, min_level, max_level)
    out = fpn(_features(in_channels, min_level, size=256))
    assert len(out) == fpn.num_levels == max_level - min_level + 1
    assert [o.shape[-1] for o in out] == [256 >> level for level in range(min_level, max_level + 1)]
    assert all(o.shape[1] == 16 for o in out)


@pytest.mark.parametrize("source, in_channels", [("p5", 64), ("c5", 64), ("c5", 16)])
def test_fpn_extra_source(source, in_channels):
    fpn = FPN([8, 16, in_channels], 16, 3, 7, extra_source=source)
    extra = fpn.fpn.extra_blocks
    assert extra.use_P5 == (source == "p5")
    assert extra.p6.in_channels == (16 if source == "p5" else in_channels)
    feats = _features([8, 16, in_channels], 3, size=256)
    with torch.no_grad():
        out = fpn(feats)
        source_map = out[2] if source == "p5" else feats["c5"]
        assert torch.allclose(out[3], extra.p6(source_map), atol=1e-6)
        assert torch.allclose(out[4], extra.p7(torch.relu(out[3])), atol=1e-6)


def test_fpn_level_limits():
    with pytest.raises(ConfigError):
        FPN([8, 16, 32], 16, 3, 8)


def test_flatten_level_is_location_major():
    num_anchors, k, h, w = 3, 2, 2, 4
    # value = ((a * K + k) * H + y) * W + x: decode it back from the flattened layout
    x = torch.arange(num_anchors * k * h * w, dtype=torch.float32).view(1, num_anchors * k, h, w)
    flat = flatten_level(x, num_anchors)  # [1, H*W*A, K]
    assert flat.shape == (1, h * w * num_anchors, k)
    for y in range(h):
        for xx in range(w):
            for a in range(num_anchors):
                for c in range(k):
                    expected = ((a * k + c) * h + y) * w + xx
                    assert flat[0, (y * w + xx) * num_anchors + a, c] == expected


def _head(**kwargs) -> DenseHead:
    args = {"in_channels": 16, "num_classes": 5, "num_anchors": 1, "num_levels": 3,
            "channels": 32, "num_convs": 2}
    args.update(kwargs)
    return DenseHead(**args)


def test_nine_anchor_output_shapes():
    head = _head(num_anchors=9, centerness="reg")
    feats = [torch.rand(2, 16, 8, 8), torch.rand(2, 16, 4, 4), torch.rand(2, 16, 2, 2)]
    out = head(feats)
    assert [tuple(c.shape) for c in out.cls] == [(2, 576, 5), (2, 144, 5), (2, 36, 5)]
    assert [tuple(r.shape) for r in out.reg] == [(2, 576, 4), (2, 144, 4), (2, 36, 4)]
    assert [tuple(c.shape) for c in out.centerness] == [(2, 576), (2, 144), (2, 36)]
    assert head.cls_logits.out_channels == 45 and head.bbox_pred.out_channels == 36
    assert head.centerness.out_channels == 9


@pytest.mark.parametrize("enabled", [True, False])
def test_scalar_per_level_params_exist_iff_enabled(enabled):
    head = _head(scalar_per_level=enabled)
    scales = [n for n, _ in head.named_parameters() if n.startswith("scales.")]
    if enabled:
        assert scales == ["scales.0.scale", "scales.1.scale", "scales.2.scale"]
        assert all(isinstance(s, Scale) and s.scale.item() == 1.0 for s in head.scales)
    else:
        assert scales == [] and head.scales is None


def test_scalar_multiplies_regression_output():
    torch.manual_seed(0)
    head = _head(scalar_per_level=True)
    feats = [torch.rand(1, 16, 4, 4)] * 3
    before = head(feats).reg
    with torch.no_grad():
        head.scales[1].scale.fill_(3.0)
    after = head(feats).reg
    assert torch.allclose(after[1], 3 * before[1]) and torch.equal(after[0], before[0])


def test_gn_switch_and_centerness_placement():
    gn = _head(group_norm=True)
    plain = _head(group_norm=False)
    assert sum(isinstance(m, nn.GroupNorm) for m in gn.modules()) == 4
    assert not any(isinstance(m, nn.GroupNorm) for m in plain.modules())
    assert _head(centerness="none").centerness is None
    feats = [torch.rand(1, 16, 4, 4)] * 3
    # centerness on cls: its gradient reaches the cls tower, not the reg tower
    for on, tower, other in (("cls", "cls_tower", "reg_tower"), ("reg", "reg_tower", "cls_tower")):
        head = _head(centerness=on)
        sum(c.sum() for c in head(feats).centerness).backward()
        assert getattr(head, tower)[0].weight.grad is not None
        assert getattr(head, other)[0].weight.grad is None


def test_init_prior_and_point_bias():
    head = _head(prior_prob=0.01, point_regression=True)
    assert torch.allclose(head.cls_logits.bias, torch.full((5,), -math.log(99.0)))
    assert torch.all(head.bbox_pred.bias == 4.0)
    out = head([torch.randn(1, 16, 4, 4)] * 3)
    assert all((r >= 0).all() for r in out.reg)  # point regression: relu(scale * x)
    assert torch.all(_head().bbox_pred.bias == 0.0)
