"""torchvision FCOS / RetinaNet weights -> our DenseDetector (the parity tests' bridge).

    load_torchvision_weights(detector, torchvision_model.state_dict())

Key mapping (``map_torchvision_key``), everything else identical below the prefix:

    torchvision                                   ours
    backbone.body.*                               backbone.body.*      (same ResNet names)
    backbone.fpn.*                                fpn.fpn.*            (same FeaturePyramidNetwork)
    head.classification_head.conv.<i>.*           head.cls_tower.<j>.*
    head.classification_head.cls_logits.*         head.cls_logits.*
    head.regression_head.conv.<i>.*               head.reg_tower.<j>.*
    head.regression_head.bbox_reg.*               head.bbox_pred.*
    head.regression_head.bbox_ctrness.*           head.centerness.*

FCOS's towers are flat Sequentials (conv, GroupNorm, ReLU) x 4, so j = i. RetinaNet's are
``Conv2dNormActivation`` blocks, ``conv.<i>.<k>`` with k = 0 conv, 1 norm when there is one:
j = i * (layers per block: 2 without a norm, 3 with one) + k, our tower's flat order.
Our detector must be built in the matching configuration (no per-level scalar, same head width and
norm); ``load_torchvision_weights`` loads strictly and raises ``ConfigError`` naming the first keys
that do not fit.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor, nn

from atss_bench.errors import ConfigError

_TOWERS = {"classification_head": "cls_tower", "regression_head": "reg_tower"}
_HEAD_LAYERS = {
    "classification_head.cls_logits": "cls_logits",
    "regression_head.bbox_reg": "bbox_pred",
    "regression_head.bbox_ctrness": "centerness",
}
_TOWER_KEY = re.compile(r"head\.(classification_head|regression_head)\.conv\.(\d+)\.(.+)")
_BLOCK_KEY = re.compile(r"(\d+)\.(.+)")  # the rest of a Conv2dNormActivation key: "<k>.<param>"


def map_torchvision_key(key: str, tower_block_size: int | None = None) -> str:
    """One torchvision FCOS / RetinaNet state-dict key -> ours.

    ``tower_block_size``: None for flat towers (FCOS); 2 or 3 for RetinaNet's
    ``Conv2dNormActivation`` towers (conv + ReLU, conv + norm + ReLU).
    """
    for source, target in (("backbone.body.", "backbone.body."), ("backbone.fpn.", "fpn.fpn.")):
        if key.startswith(source):
            return target + key[len(source):]
    tower = _TOWER_KEY.fullmatch(key)
    if tower is not None:
        head, index, rest = tower.group(1), int(tower.group(2)), tower.group(3)
        if tower_block_size is not None:
            block = _BLOCK_KEY.fullmatch(rest)
            if block is None:
                raise ConfigError(f"torchvision key {key!r}: expected conv.<i>.<k>.<param>")
            index, rest = index * tower_block_size + int(block.group(1)), block.group(2)
        return f"head.{_TOWERS[head]}.{index}.{rest}"
    for source, target in _HEAD_LAYERS.items():
        prefix = f"head.{source}."
        if key.startswith(prefix):
            return f"head.{target}.{key[len(prefix):]}"
    raise ConfigError(f"torchvision key {key!r} has no counterpart in our detector",
                      hint="only torchvision's FCOS and RetinaNet (ResNet FPN) state dicts map")


def tower_block_size(state: Mapping[str, Tensor]) -> int | None:
    """None for flat (FCOS) towers; 2 or 3 for RetinaNet's Conv2dNormActivation towers."""
    keys = [k for k in state if _TOWER_KEY.fullmatch(k)]
    nested = [k for k in keys if re.fullmatch(r"head\.\w+\.conv\.\d+\.\d+\..+", k)]
    if not nested:
        return None
    has_norm = any(re.fullmatch(r"head\.\w+\.conv\.\d+\.1\..+", k) for k in nested)
    return 3 if has_norm else 2


def convert_torchvision_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision FCOS / RetinaNet state dict with our keys (tensors shared, not copied)."""
    block_size = tower_block_size(state)
    return {map_torchvision_key(key, block_size): value for key, value in state.items()}


def load_torchvision_weights(detector: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy a torchvision FCOS / RetinaNet state dict into ``detector`` (strict)."""
    converted = convert_torchvision_state_dict(state)
    own = detector.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(converted)
                         if own[k].shape != converted[k].shape)
    if missing or unexpected or wrong_shape:
        raise ConfigError(
            f"torchvision weights do not fit this detector: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong_shape[:3]}",
            hint="build ours in the matching configuration "
                 "(tests/model/test_parity_torchvision.py)")
    detector.load_state_dict(converted, strict=True)
