"""Datasets: COCO-format detection data, the synthetic mini-COCO generator, stats, subsets,
dataset identity (fingerprints) and the pre-training data check.

Names are imported on first use, so ``atss_bench.data.identity`` and ``.roots`` (used by the job
layer, which must not import torch) stay light.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .coco import BadImageError, CocoDetection, coco_split_paths, collate_detection
    from .identity import DatasetIdentity, resolve_dataset_identity
    from .mini import MiniCocoSpec, ensure_mini_coco, generate_mini_coco
    from .preflight import preflight_dataset
    from .roots import resolve_data_root, resolve_dataset_root
    from .stats import box_stats, compare_stats
    from .subset import write_coco_subset
    from .transforms import DetectionTransform, get_resize_size, map_boxes_to_original

_EXPORTS = {
    "BadImageError": "coco",
    "CocoDetection": "coco",
    "DatasetIdentity": "identity",
    "DetectionTransform": "transforms",
    "MiniCocoSpec": "mini",
    "box_stats": "stats",
    "coco_split_paths": "coco",
    "collate_detection": "coco",
    "compare_stats": "stats",
    "ensure_mini_coco": "mini",
    "generate_mini_coco": "mini",
    "get_resize_size": "transforms",
    "map_boxes_to_original": "transforms",
    "preflight_dataset": "preflight",
    "resolve_data_root": "roots",
    "resolve_dataset_identity": "identity",
    "resolve_dataset_root": "roots",
    "write_coco_subset": "subset",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'atss_bench.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
