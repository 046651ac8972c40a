"""DCNv2 as the official DFConv2d: sigmoid mask, (dy, dx) offset layout, init, in-tower option."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atss_bench.model.dcn import ModulatedDeformConv3x3
from atss_bench.model.head import DenseHead


def _plain_and_dcn(bias: bool = False) -> tuple[nn.Conv2d, ModulatedDeformConv3x3]:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=bias)
    return conv, ModulatedDeformConv3x3.from_conv(conv)


def _set_offset_mask(layer: ModulatedDeformConv3x3, dy: float, dx: float, logit: float) -> None:
    with torch.no_grad():
        layer.offset_mask.weight.zero_()
        layer.offset_mask.bias.copy_(torch.tensor([dy, dx] * 9 + [logit] * 9))


@pytest.mark.parametrize("logit", [0.0, 1.5, -2.0])
def test_mask_is_sigmoid_of_the_logits(logit):
    conv, dcn = _plain_and_dcn()
    _set_offset_mask(dcn, 0.0, 0.0, logit)
    x = torch.rand(2, 4, 7, 9)
    with torch.no_grad():
        expected = conv(x) * (1.0 / (1.0 + math.exp(-logit)))  # 2 * sigmoid would double this
        assert torch.allclose(dcn(x), expected, atol=1e-5)


def test_offsets_are_dy_dx_pairs_per_tap():
    """Offset (0, +1) at every tap samples one pixel to the right: conv of the shifted input."""
    conv, dcn = _plain_and_dcn()
    _set_offset_mask(dcn, 0.0, 1.0, 40.0)
    x = torch.rand(1, 4, 6, 8)
    with torch.no_grad():
        shifted = F.pad(x[..., 1:], (0, 1))  # x[..., j + 1], zero beyond the border
        # column 0 differs only in the left padding: the DCN reads x[..., 0] there
        assert torch.allclose(dcn(x)[..., 1:], conv(shifted)[..., 1:], atol=1e-5)
    _set_offset_mask(dcn, 1.0, 0.0, 40.0)  # (+1, 0): one pixel down
    with torch.no_grad():
        shifted = F.pad(x[..., 1:, :], (0, 0, 0, 1))
        assert torch.allclose(dcn(x)[..., 1:, :], conv(shifted)[..., 1:, :], atol=1e-5)


def test_init_follows_the_official_layer():
    layer = ModulatedDeformConv3x3(16, 8, bias=True)
    fan_in = 16 * 9
    # offset/mask conv: kaiming_uniform_(a=1) -> U(+-sqrt(3 / fan_in)), zero bias
    bound = math.sqrt(3.0 / fan_in)
    assert layer.offset_mask.out_channels == 27
    assert layer.offset_mask.weight.abs().max() <= bound
    assert layer.offset_mask.weight.abs().max() > 0.5 * bound
    assert torch.equal(layer.offset_mask.bias, torch.zeros(27))
    # deformable weight U(+-1/sqrt(fan_in)), zero bias
    assert layer.weight.abs().max() <= 1.0 / math.sqrt(fan_in)
    assert layer.bias is not None and torch.equal(layer.bias, torch.zeros(8))


def test_from_conv_keeps_shape_stride_groups_and_refuses_other_kernels():
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4, bias=False)
    dcn = ModulatedDeformConv3x3.from_conv(conv)
    assert dcn.stride == (2, 2) and dcn.weight.shape == (8, 2, 3, 3) and dcn.bias is None
    assert torch.equal(dcn.weight, conv.weight)
    assert dcn(torch.rand(1, 8, 10, 10)).shape == (1, 8, 5, 5)
    with pytest.raises(ValueError, match="3x3 convs only"):
        ModulatedDeformConv3x3.from_conv(nn.Conv2d(8, 8, 1))


@pytest.mark.parametrize("num_convs", [1, 3])
def test_dcn_in_tower_makes_only_the_last_tower_conv_deformable(num_convs):
    torch.manual_seed(0)
    head = DenseHead(32, 3, 1, 2, channels=32, num_convs=num_convs, dcn_in_tower=True)
    for tower in (head.cls_tower, head.reg_tower):
        kinds = [type(m) for m in tower if isinstance(m, (nn.Conv2d, ModulatedDeformConv3x3))]
        assert kinds == [nn.Conv2d] * (num_convs - 1) + [ModulatedDeformConv3x3]
        last = [m for m in tower if isinstance(m, ModulatedDeformConv3x3)][0]
        # the head's init loop re-initialises the offset conv (an nn.Conv2d) to N(0, 0.01)
        assert last.offset_mask.weight.std().item() == pytest.approx(0.01, rel=0.1)
        assert torch.equal(last.offset_mask.bias, torch.zeros(27))
        assert last.bias is not None and torch.equal(last.bias, torch.zeros(32))
    plain = DenseHead(32, 3, 1, 2, channels=32, num_convs=num_convs)
    assert not any(isinstance(m, ModulatedDeformConv3x3) for m in plain.modules())
    out = head([torch.rand(1, 32, 8, 8), torch.rand(1, 32, 4, 4)])
    assert [c.shape for c in out.cls] == [(1, 64, 3), (1, 16, 3)]
