"""The dense head shared by every pyramid level (RetinaNet / FCOS / ATSS in one module).

Two towers, classification and regression, of ``num_convs`` x (conv3x3 to ``channels``
[+ GroupNorm(32)] + ReLU). On top: class logits (A * C channels, bias
-log((1 - prior) / prior)), regression (A * 4) and an optional centerness branch (A * 1, on the
classification or the regression tower).

Choices, following the official ATSS code (sfzhang15/ATSS, ``atss.py``):

- Centerness predicts one value *per anchor* (A channels), as the official head does
  (``num_anchors * 1``); for #A = 1 this is FCOS's one value per location.
- The per-level trainable scalar (init 1.0) multiplies the raw regression output. For box
  regression that output holds the deltas (dx, dy, dw, dh), so the scalar acts before the exp()
  of dw, dh in the box coder. For point regression the output is ``relu(scalar * x)`` = ltrb /
  stride (official ATSS and FCOS with normalised targets), and the regression bias starts at 4
  (an 8S box around the point at init, as the official code does), not FCOS-v1's exp(scalar * x).
- Point regression with #A > 1 regresses one ltrb per anchor, all from the location centre
  (the official code supports #A = 1 only).
- ``dcn_in_tower`` (official ``USE_DCN_IN_TOWER``, the "-DCN" configs of Table 8): the last conv
  of each tower is a modulated deformable conv (``atss_bench.model.dcn``, mask = sigmoid, with a
  bias). As in the official head, the init loop below re-initialises every ``nn.Conv2d`` (its
  offset/mask conv included) to normal(0, 0.01), while the deformable weight keeps
  U(+-1/sqrt(fan_in)) and a zero bias.

Outputs are flattened to the anchors' layout (level by level is left to the caller; within a level
location-major, the A anchors of a location adjacent): per level ``cls`` [B, H*W*A, C],
``reg`` [B, H*W*A, 4], ``centerness`` [B, H*W*A] or None.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from math import gcd
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atss_bench.model.dcn import ModulatedDeformConv3x3

CenternessOn = Literal["none", "cls", "reg"]
POINT_REGRESSION_BIAS = 4.0


@dataclass
class HeadOutputs:
    """Per-level predictions, each flattened to [B, H*W*A, ...] (see the module docstring)."""

    cls: list[Tensor]
    reg: list[Tensor]
    centerness: list[Tensor] | None


class Scale(nn.Module):
    """A trainable scalar, init 1.0 (one per pyramid level)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def make_tower(in_channels: int, channels: int, num_convs: int, group_norm: bool,
               deformable_last: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(num_convs):
        source = in_channels if index == 0 else channels
        if deformable_last and index == num_convs - 1:
            layers.append(ModulatedDeformConv3x3(source, channels, bias=True))
        else:
            layers.append(nn.Conv2d(source, channels, 3, padding=1))
        if group_norm:
            # 32 groups (fewer below 64 channels, so that a group never holds a single channel:
            # a 1x1 top level would make such a group's variance undefined).
            layers.append(nn.GroupNorm(gcd(32, max(channels // 2, 1)), channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def flatten_level(x: Tensor, num_anchors: int) -> Tensor:
    """[B, A*K, H, W] -> [B, H*W*A, K] (location-major, anchors of a location adjacent)."""
    b, ak, h, w = x.shape
    k = ak // num_anchors
    return x.view(b, num_anchors, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * num_anchors, k)


class DenseHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, num_anchors: int, num_levels: int,
                 channels: int = 256, num_convs: int = 4, group_norm: bool = True,
                 centerness: CenternessOn = "reg", scalar_per_level: bool = True,
                 prior_prob: float = 0.01, point_regression: bool = False,
                 dcn_in_tower: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.centerness_on = centerness
        self.point_regression = point_regression
        self.cls_tower = make_tower(in_channels, channels, num_convs, group_norm, dcn_in_tower)
        self.reg_tower = make_tower(in_channels, channels, num_convs, group_norm, dcn_in_tower)
        top = channels if num_convs > 0 else in_channels
        self.cls_logits = nn.Conv2d(top, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(top, num_anchors * 4, 3, padding=1)
        self.centerness = (nn.Conv2d(top, num_anchors, 3, padding=1)
                           if centerness != "none" else None)
        self.scales = (nn.ModuleList(Scale(1.0) for _ in range(num_levels))
                       if scalar_per_level else None)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        if point_regression:
            nn.init.constant_(self.bbox_pred.bias, POINT_REGRESSION_BIAS)

    def forward(self, features: list[Tensor]) -> HeadOutputs:
        cls_out, reg_out, ctr_out = [], [], []
        for level, feature in enumerate(features):
            cls_feature = self.cls_tower(feature)
            reg_feature = self.reg_tower(feature)
            reg = self.bbox_pred(reg_feature)
            if self.scales is not None:
                reg = self.scales[level](reg)
            if self.point_regression:
                reg = F.relu(reg)
            cls_out.append(flatten_level(self.cls_logits(cls_feature), self.num_anchors))
            reg_out.append(flatten_level(reg, self.num_anchors))
            if self.centerness is not None:
                source = cls_feature if self.centerness_on == "cls" else reg_feature
                ctr_out.append(flatten_level(self.centerness(source), self.num_anchors)[..., 0])
        return HeadOutputs(cls_out, reg_out, ctr_out if self.centerness is not None else None)
