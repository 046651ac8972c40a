"""Feature pyramid P<min_level>..P<max_level> on backbone features C<min_level>..C5.

torchvision.ops.FeaturePyramidNetwork builds P<min>..P5 (lateral 1x1 + top-down + output 3x3);
torchvision's LastLevelP6P7 adds P6 = conv3x3/2(source), P7 = conv3x3/2(relu(P6)), where the
source is P5 (FCOS / ATSS official) or C5 (RetinaNet). Levels above max_level are dropped, so
max_level may be 3..7 (P8 would need a third extra conv torchvision does not provide).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from atss_bench.errors import ConfigError

MAX_SUPPORTED_LEVEL = 7


class FPN(nn.Module):
    """Maps ``{"c<min>": .., "c5": ..}`` to a list of P<min_level>..P<max_level> maps."""

    def __init__(self, in_channels: list[int], channels: int, min_level: int, max_level: int,
                 extra_source: Literal["p5", "c5"] = "p5") -> None:
        super().__init__()
        if not 2 <= min_level <= 5:
            raise ConfigError(f"fpn.min_level must be in 2..5, got {min_level}")
        if not min_level <= max_level <= MAX_SUPPORTED_LEVEL:
            raise ConfigError(f"fpn.max_level must be in {min_level}..{MAX_SUPPORTED_LEVEL}, "
                              f"got {max_level}", hint="P8 and above are not implemented")
        if len(in_channels) != 6 - min_level:
            raise ValueError(f"expected C{min_level}..C5 channels, got {in_channels}")
        extra = None
        if max_level > 5:
            source_channels = channels if extra_source == "p5" else in_channels[-1]
            extra = LastLevelP6P7(source_channels, channels)
            # torchvision infers the source from equal channel counts; state it explicitly.
            extra.use_P5 = extra_source == "p5"
        self.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=extra)
        self.num_levels = max_level - min_level + 1
        self.out_channels = channels

    def forward(self, features: OrderedDict[str, Tensor]) -> list[Tensor]:
        return list(self.fpn(features).values())[:self.num_levels]
