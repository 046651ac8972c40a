"""Modulated deformable 3x3 convolution (DCNv2), as the official ATSS code builds it.

The official ``DFConv2d`` (``atss_core/layers/misc.py``, ``with_modulated_dcn=True``) predicts,
from the layer's input, 27 channels with a plain 3x3 conv of the same stride / dilation: 18
offsets ((dy, dx) per kernel tap) then 9 mask logits; the mask is ``sigmoid`` of those (not
``2 * sigmoid``). The convolution itself is ``torchvision.ops.deform_conv2d``.

Initialisation follows the official layer: the offset/mask conv ``kaiming_uniform_(a=1)`` with a
zero bias (a head re-initialises it to normal(0, 0.01), as the official head's init loop does,
because it is an ``nn.Conv2d``); the deformable weight U(+-1/sqrt(fan_in)) with a zero bias, or
the plain conv's weights when it replaces one (``from_conv``; the state-dict key ``weight`` stays
the plain conv's, so ImageNet checkpoints load unchanged).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

KERNEL_TAPS = 9  # 3 x 3


class ModulatedDeformConv3x3(nn.Module):
    """DCNv2 3x3 conv: offsets and sigmoid mask from ``offset_mask`` (a plain 3x3 conv)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.stride, self.padding = (stride, stride), (dilation, dilation)
        self.dilation = (dilation, dilation)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        bound = 1.0 / math.sqrt(in_channels // groups * KERNEL_TAPS)
        nn.init.uniform_(self.weight, -bound, bound)
        self.offset_mask = nn.Conv2d(in_channels, 3 * KERNEL_TAPS, 3, stride=stride,
                                     padding=dilation, dilation=dilation)
        nn.init.kaiming_uniform_(self.offset_mask.weight, a=1)
        nn.init.zeros_(self.offset_mask.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "ModulatedDeformConv3x3":
        """A DCNv2 layer with ``conv``'s shape and weights (a 3x3 conv, symmetric stride)."""
        if conv.kernel_size != (3, 3):
            raise ValueError(f"DCN replaces 3x3 convs only, got {conv.kernel_size}")
        layer = cls(conv.in_channels, conv.out_channels, stride=int(conv.stride[0]),
                    dilation=int(conv.dilation[0]), groups=conv.groups,
                    bias=conv.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None and layer.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, C, H, W] -> offsets [B, 18, H', W'] and mask [B, 9, H', W'] in (0, 1)."""
        out = self.offset_mask(x)
        return out[:, :2 * KERNEL_TAPS], out[:, 2 * KERNEL_TAPS:].sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask)
