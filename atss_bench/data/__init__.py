"""Datasets: COCO-format detection data, the synthetic mini-COCO generator, stats, subsets."""
from .coco import CocoDetection, coco_split_paths, collate_detection, resolve_data_root
from .mini import MiniCocoSpec, ensure_mini_coco, generate_mini_coco
from .stats import box_stats, compare_stats
from .subset import write_coco_subset
from .transforms import DetectionTransform, get_resize_size, map_boxes_to_original

__all__ = [
    "CocoDetection",
    "DetectionTransform",
    "MiniCocoSpec",
    "box_stats",
    "coco_split_paths",
    "collate_detection",
    "compare_stats",
    "ensure_mini_coco",
    "generate_mini_coco",
    "get_resize_size",
    "map_boxes_to_original",
    "resolve_data_root",
    "write_coco_subset",
]
