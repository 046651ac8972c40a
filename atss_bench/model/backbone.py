"""ResNet / ResNeXt backbones returning C2-C5 (torchvision networks, our knobs).

Knobs the paper and the CPU profile need:

- ``frozen_stages``: 0 nothing, 1 the stem (conv1 + its norm), 2 stem + res2 (the paper),
  3-5 also res3-res5. Frozen parameters get ``requires_grad=False`` and frozen stages stay in
  eval mode, so a trainable BatchNorm there does not update its running statistics either.
- ``norm``: ``frozen_bn`` (torchvision.ops.FrozenBatchNorm2d, the paper), ``bn`` (trainable
  BatchNorm2d) or ``gn`` (trainable GroupNorm, 32 groups or fewer when the width is small).
- ``dcn_stages``: DCNv2 in those stages (2 = res2 .. 5 = res5; the official configs use res3-res5
  for R-50 / R-101, res4-res5 for ResNeXt): the 3x3 ``conv2`` of every block becomes
  ``atss_bench.model.dcn.ModulatedDeformConv3x3`` with the plain conv's pretrained weights (same
  state-dict key), offsets and sigmoid mask from a kaiming-initialised conv, as the official
  ``DFConv2d`` (so at init it is *not* the plain convolution: the mask is ~0.5, the offsets random).
- ``width``: channel multiplier (1.0 = torchvision's network) for the CPU mini profile.
- ``weights``: ``"imagenet"`` (torchvision weights API), ``"none"``, or a local path to a
  torchvision-style ResNet state dict (``fc.*`` keys and missing DCN offset convs are tolerated;
  a ``{"state_dict": ...}`` wrapper and our ``[backbone.]body.`` key prefixes too).
"""
from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision import models
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d

from atss_bench.errors import ConfigError
from atss_bench.model.fold_bn import fold_frozen_batchnorm
from atss_bench.model.dcn import ModulatedDeformConv3x3

NormKind = Literal["frozen_bn", "bn", "gn"]
NO_NETWORK_HINT = "no network: use weights: none or a local checkpoint path"


@dataclass(frozen=True)
class ResNetSpec:
    block: type[BasicBlock | Bottleneck]
    layers: tuple[int, int, int, int]
    groups: int
    width_per_group: int
    weights: models.WeightsEnum


RESNETS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec(BasicBlock, (2, 2, 2, 2), 1, 64, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": ResNetSpec(BasicBlock, (3, 4, 6, 3), 1, 64, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": ResNetSpec(Bottleneck, (3, 4, 6, 3), 1, 64, models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": ResNetSpec(Bottleneck, (3, 4, 23, 3), 1, 64,
                            models.ResNet101_Weights.IMAGENET1K_V1),
    "resnext101_32x8d": ResNetSpec(Bottleneck, (3, 4, 23, 3), 32, 8,
                                   models.ResNeXt101_32X8D_Weights.IMAGENET1K_V1),
    "resnext101_64x4d": ResNetSpec(Bottleneck, (3, 4, 23, 3), 64, 4,
                                   models.ResNeXt101_64X4D_Weights.IMAGENET1K_V1),
}
STAGES = ("layer1", "layer2", "layer3", "layer4")  # res2 .. res5 = C2 .. C5


def make_norm_layer(norm: NormKind) -> Callable[[int], nn.Module]:
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return lambda channels: nn.GroupNorm(gcd(32, channels), channels)
    raise ConfigError(f"unknown backbone norm '{norm}'", hint="frozen_bn, bn or gn")


class ScaledResNet(ResNet):
    """torchvision's ResNet with every stage's width multiplied by ``width``."""

    def __init__(self, spec: ResNetSpec, width: float, norm_layer: Callable[[int], nn.Module]):
        super().__init__(spec.block, list(spec.layers), groups=spec.groups,
                         width_per_group=spec.width_per_group, norm_layer=norm_layer)
        if width == 1.0:
            return
        base = max(8, round(64 * width))
        # Rebuild the stem and stages at the scaled width (torchvision hard-codes 64 .. 512).
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(base)
        for index, name in enumerate(STAGES):
            stride = 1 if index == 0 else 2
            setattr(self, name, self._make_layer(spec.block, base * 2**index,
                                                 spec.layers[index], stride=stride))
        self.fc = nn.Linear(base * 8 * spec.block.expansion, 1000)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def add_deformable_convs(net: ResNet, stages: tuple[int, ...]) -> None:
    """Replace ``conv2`` (a 3x3 conv in both block types) of every block of ``stages`` (2..5)."""
    for stage in stages:
        if not 2 <= stage <= 5:
            raise ConfigError(f"DCN stage must be in 2..5 (res2..res5), got {stage}")
        for block in getattr(net, STAGES[stage - 2]):
            block.conv2 = ModulatedDeformConv3x3.from_conv(block.conv2)


def load_weights(net: ResNet, spec: ResNetSpec, weights: str, width: float, norm: NormKind) -> None:
    if weights == "none":
        return
    if weights == "imagenet":
        if width != 1.0:
            raise ConfigError(f"ImageNet weights exist for width 1.0 only, got width {width}",
                              hint="use weights: none for a scaled backbone")
        if norm == "gn":
            raise ConfigError("ImageNet weights are BatchNorm weights; norm 'gn' cannot load them",
                              hint="use norm: frozen_bn or bn, or weights: none")
        try:
            state = spec.weights.get_state_dict(progress=False)
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
            raise ConfigError(f"cannot fetch ImageNet weights {spec.weights} ({exc})",
                              hint=NO_NETWORK_HINT) from None
    else:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"backbone weights '{weights}' is not a file",
                              hint="weights is 'imagenet', 'none' or a local checkpoint path")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            raise ConfigError(f"cannot read backbone weights '{weights}' ({exc})",
                              hint="expected a state dict saved with torch.save") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConfigError(f"backbone weights '{weights}' hold no state dict")
        state = _strip_prefix(state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if ".offset_mask." not in k and not k.startswith("fc.")]
    unexpected = [k for k in unexpected if not k.startswith("fc.")]
    if missing or unexpected:
        raise ConfigError(
            f"backbone weights '{weights}' do not fit {spec.block.__name__} ResNet: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}",
            hint="save the state dict of the same torchvision ResNet (same name, width, norm)")


def _strip_prefix(state: dict) -> dict:
    """Accept our own ``Backbone`` / detector state dicts too (``[backbone.]body.`` prefixes)."""
    for prefix in ("backbone.body.", "body."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


class Backbone(nn.Module):
    """ResNet body returning ``{"c<first_stage>": ..., "c5": ...}`` (first_stage in 2..5).

    ``out_channels`` lists the returned stages' channels, in order.
    """

    def __init__(self, name: str, weights: str = "none", frozen_stages: int = 2,
                 norm: NormKind = "frozen_bn", width: float = 1.0,
                 dcn_stages: tuple[int, ...] = (), first_stage: int = 3) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ConfigError(f"unknown backbone '{name}'", hint=f"one of {sorted(RESNETS)}")
        if not 2 <= first_stage <= 5:
            raise ConfigError(f"first returned stage must be in 2..5, got {first_stage}")
        spec = RESNETS[name]
        net = ScaledResNet(spec, width, make_norm_layer(norm))
        if dcn_stages:
            add_deformable_convs(net, dcn_stages)
        load_weights(net, spec, weights, width, norm)
        if norm == "frozen_bn":
            fold_frozen_batchnorm(net)  # same function, one pass fewer (model.fold_bn)
        returned = {STAGES[s - 2]: f"c{s}" for s in range(first_stage, 6)}
        self.body = IntermediateLayerGetter(net, return_layers=returned)
        self.out_channels = [_block_out_channels(getattr(net, STAGES[s - 2])[-1])
                             for s in range(first_stage, 6)]
        # Stage 1 = the stem's conv1 + norm; stages 2..5 = layer1..layer4.
        stages = [["conv1", "bn1"], *([s] for s in STAGES)]
        self.frozen_names = [module for names in stages[:frozen_stages] for module in names]
        for module in self.frozen_names:
            self.body[module].requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for name in self.frozen_names:
            self.body[name].eval()
        return self

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.body(x)


def _block_out_channels(block: nn.Module) -> int:
    last_conv = block.conv3 if isinstance(block, Bottleneck) else block.conv2
    return int(last_conv.out_channels)  # type: ignore[union-attr]
