"""The closed table of sample-selection rules, and the check of a call's strategy and params."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from atss_bench.assign.atss import assign_atss
from atss_bench.assign.fcos import assign_fcos
from atss_bench.assign.max_iou import assign_max_iou
from atss_bench.assign.topk_scale import assign_topk_scale
from atss_bench.errors import ConfigError

# (anchors [N, 4], num_anchors_per_level, gt_boxes [B, M, 4], gt_valid [B, M], **params) -> [B, N]
AssignFn = Callable[..., Tensor]

ASSIGNERS: dict[str, AssignFn] = {
    "max_iou": assign_max_iou,
    "fcos": assign_fcos,
    "topk_scale": assign_topk_scale,
    "atss": assign_atss,
}


def get_assigner(strategy: str, params: Mapping[str, Any]) -> AssignFn:
    """The rule named ``strategy``, after checking ``params`` against its keyword arguments.

    Raises ConfigError naming an unknown strategy, an unknown param or a missing required one.
    """
    if strategy not in ASSIGNERS:
        raise ConfigError(
            f"unknown assign strategy {strategy!r}", hint=f"choose one of {', '.join(ASSIGNERS)}"
        )
    assigner = ASSIGNERS[strategy]
    accepted = _keyword_params(assigner)
    for name in params:
        if name not in accepted:
            raise ConfigError(
                f"unknown param {name!r} for assign strategy {strategy!r}",
                hint=f"{strategy} takes {', '.join(accepted)}",
            )
    for name, param in accepted.items():
        if param.default is inspect.Parameter.empty and name not in params:
            raise ConfigError(f"assign strategy {strategy!r} needs param {name!r}")
    return assigner


def _keyword_params(assigner: AssignFn) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(assigner).parameters.values()
    return {p.name: p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
