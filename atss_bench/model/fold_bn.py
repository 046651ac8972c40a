"""Frozen BatchNorm folded into the convolution before it (a speed-up of the paper's setting).

A FrozenBatchNorm2d after a bias-free convolution computes ``conv(x, W) * s + b`` with constants
``s = gamma / sqrt(var + eps)`` and ``b = beta - mean * s``. Folded, the convolution computes
``conv(x, W * s) + b``: the same function (float rounding aside, ~1e-7 relative), in one kernel
that adds the bias itself, instead of a convolution, a multiplication and an addition over the
activations (and the multiplication's backward where the stage trains). Gradients reach W
through ``W * s`` exactly as they did through ``conv(x, W) * s``.

Nothing moves: the convolution keeps its weight, the norm keeps its buffers under the same
state-dict keys (ImageNet weights, checkpoints and the torchvision weight mapping load as
before). The convolution reads the norm's buffers at every call, so loading weights after folding
takes effect; the norm then passes its input through.
"""
from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck
from torchvision.ops import FrozenBatchNorm2d


class FoldedConv2d(nn.Conv2d):
    """A bias-free Conv2d that applies the FrozenBatchNorm2d after it (``folded_norm``)."""

    def forward(self, input: Tensor) -> Tensor:
        norm: FrozenBatchNorm2d = self.__dict__["folded_norm"]
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()  # [C_out]
        bias = norm.bias - norm.running_mean * scale
        return self._conv_forward(input, self.weight * scale.view(-1, 1, 1, 1), bias)


class FoldedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """A FrozenBatchNorm2d whose convolution applies it: the identity here."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def conv_norm_pairs(net: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(convolution, the norm right after it) of the stem, every block and every downsample."""
    pairs: list[tuple[nn.Module, nn.Module]] = [(net.conv1, net.bn1)]
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in stage:
            pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2)]
            if isinstance(block, Bottleneck):
                pairs.append((block.conv3, block.bn3))
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1]))
    return pairs


def fold_frozen_batchnorm(net: nn.Module) -> int:
    """Fold every FrozenBatchNorm2d of ``net`` (a torchvision ResNet or its body) into its
    plain, bias-free convolution, in place (deformable convolutions and other norms are left as
    they are). Returns how many were folded."""
    folded = 0
    for conv, norm in conv_norm_pairs(net):
        if type(conv) is nn.Conv2d and conv.bias is None and type(norm) is FrozenBatchNorm2d:
            conv.__class__ = FoldedConv2d
            conv.__dict__["folded_norm"] = norm  # a reference, not a submodule: keys unchanged
            norm.__class__ = FoldedFrozenBatchNorm2d
            folded += 1
    return folded
