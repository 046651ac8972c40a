"""The closed table of sample-selection rules, and the check of a call's strategy and params.

A strategy outside the table is a plug-in (``atss_bench.assign.plugins``), loaded only when it
is named explicitly (``pkg.module:function``, ``file.py:function`` or an entry point).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from atss_bench.assign.atss import assign_atss
from atss_bench.assign.fcos import assign_fcos
from atss_bench.assign.max_iou import assign_max_iou
from atss_bench.assign.plugins import PREDICTION_INPUTS, get_plugin_assigner
from atss_bench.assign.simota import assign_simota
from atss_bench.assign.tood import assign_task_aligned
from atss_bench.assign.topk_scale import assign_topk_scale
from atss_bench.errors import ConfigError

# (anchors [N, 4], num_anchors_per_level, gt_boxes [B, M, 4], gt_valid [B, M], **params) -> [B, N]
# Prediction-aware rules also take keyword-only gt_labels [B, M], pred_scores [B, N, C] and
# pred_boxes [B, N, 4] (``PREDICTION_INPUTS``): inputs the detector passes, not params.
AssignFn = Callable[..., Tensor]

ASSIGNERS: dict[str, AssignFn] = {
    "max_iou": assign_max_iou,
    "fcos": assign_fcos,
    "topk_scale": assign_topk_scale,
    "atss": assign_atss,
    "task_aligned": assign_task_aligned,
    "simota": assign_simota,
}


def get_assigner(strategy: str, params: Mapping[str, Any]) -> AssignFn:
    """The rule named ``strategy``, after checking ``params`` against its keyword arguments.

    A name outside ``ASSIGNERS`` is loaded as a plug-in. Raises ConfigError naming an unknown
    strategy, an unknown param or a missing required one.
    """
    if strategy not in ASSIGNERS:
        return get_plugin_assigner(strategy, params)
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


def rule_inputs(assigner: AssignFn) -> tuple[str, ...]:
    """The prediction inputs (``PREDICTION_INPUTS``) a rule asks for, in that order."""
    declared = getattr(assigner, "inputs", None)
    if declared is None:
        declared = inspect.signature(assigner).parameters
    return tuple(name for name in PREDICTION_INPUTS if name in declared)


def _keyword_params(assigner: AssignFn) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(assigner).parameters.values()
    return {p.name: p for p in parameters
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in PREDICTION_INPUTS}
