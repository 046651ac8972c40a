"""Box statistics of a COCO-format annotation file, and a side-by-side comparison of two datasets.

Objects are the non-crowd annotations. Two size views:
- COCO small / medium / large: the annotation's ``area`` < 32^2, < 96^2, >= 96^2 pixels (COCOeval's
  area ranges), which depend on the image resolution;
- relative size ``sqrt(bbox w * h / (image w * h))``, resolution-free; its ``rel small / medium /
  large`` bins are COCO's thresholds on a 640x480 image (32 / sqrt(640 * 480) = 0.0577 and
  96 / sqrt(640 * 480) = 0.173), which is how a smaller synthetic image is compared with COCO.
All bins are half-open ``[lo, hi)``; the fractions in each group sum to 1 when there are objects.
The file is read and validated by ``annotation_file.load_annotation_file`` (a malformed one is a
DataError naming it; images need no ``file_name`` here); an annotation without ``area`` counts with
its box area w * h.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .annotation_file import annotation_area, load_annotation_file

COCO_REFERENCE_SIDE = math.sqrt(640 * 480)
REL_SMALL, REL_MEDIUM = 32 / COCO_REFERENCE_SIDE, 96 / COCO_REFERENCE_SIDE
REL_SIZE_EDGES = (0.0, 0.03, REL_SMALL, 0.1, REL_MEDIUM, 0.3, 0.5, math.inf)
ASPECT_EDGES = (0.0, 1 / 3, 1 / 2, 1.0, 2.0, 3.0, math.inf)
ASPECT_LABELS = ("<1/3", "1/3-1/2", "1/2-1", "1-2", "2-3", ">=3")


def _fractions(values: np.ndarray, edges: tuple[float, ...]) -> list[float]:
    counts = np.histogram(values, bins=np.asarray(edges))[0].astype(float)
    return (counts / max(len(values), 1)).tolist()


def box_stats(annotation_json_path: str | Path) -> dict[str, float]:
    """Flat ``{statistic: value}`` of one annotation file (ordered for printing)."""
    data = load_annotation_file(annotation_json_path, require_file_names=False)
    images = {image["id"]: image for image in data["images"]}
    anns = [ann for ann in data.get("annotations", []) if not ann.get("iscrowd", 0)]
    per_image = np.zeros(len(images), int)
    index = {image_id: i for i, image_id in enumerate(images)}
    for ann in anns:
        per_image[index[ann["image_id"]]] += 1
    w = np.array([ann["bbox"][2] for ann in anns], float)
    h = np.array([ann["bbox"][3] for ann in anns], float)
    image_area = np.array([images[a["image_id"]]["width"] * images[a["image_id"]]["height"]
                           for a in anns], float)
    area = np.array([annotation_area(ann) for ann in anns], float)
    rel = np.sqrt(w * h / np.maximum(image_area, 1.0))
    aspect = w / np.maximum(h, 1e-6)
    has_objects = len(anns) > 0
    stats: dict[str, float] = {
        "images": len(images),
        "categories": len(data["categories"]),
        "objects": len(anns),
        "crowd regions": sum(1 for ann in data.get("annotations", []) if ann.get("iscrowd", 0)),
        "objects/image mean": float(per_image.mean()) if len(images) else 0.0,
        "objects/image median": float(np.median(per_image)) if len(images) else 0.0,
        "objects/image max": int(per_image.max()) if len(images) else 0,
        "images without objects": float((per_image == 0).mean()) if len(images) else 0.0,
        "rel size median": float(np.median(rel)) if has_objects else 0.0,
    }
    rel_labels = [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(REL_SIZE_EDGES[:-1], REL_SIZE_EDGES[1:])]
    rel_labels[-1] = f">={REL_SIZE_EDGES[-2]:.3g}"
    stats.update({f"rel size {label}": value
                  for label, value in zip(rel_labels, _fractions(rel, REL_SIZE_EDGES))})
    three = _fractions(rel, (0.0, REL_SMALL, REL_MEDIUM, math.inf))
    stats.update({f"rel {name}": value for name, value in zip(("small", "medium", "large"), three)})
    coco = _fractions(area, (0.0, 32.0**2, 96.0**2, math.inf))
    stats.update({f"COCO {name} (area)": value
                  for name, value in zip(("small", "medium", "large"), coco)})
    stats.update({f"aspect w/h {label}": value
                  for label, value in zip(ASPECT_LABELS, _fractions(aspect, ASPECT_EDGES))})
    stats["aspect w/h min"] = float(aspect.min()) if has_objects else 0.0
    stats["aspect w/h max"] = float(aspect.max()) if has_objects else 0.0
    stats["image area mean (px)"] = float(np.mean([i["width"] * i["height"]
                                                   for i in images.values()])) if images else 0.0
    return stats


def annotation_path(root_or_json: str | Path, split: str) -> Path:
    """``root/annotations/instances_<split>.json`` for a dataset root, or the JSON path itself."""
    path = Path(root_or_json)
    return path if path.is_file() else path / "annotations" / f"instances_{split}.json"


def compare_stats(dir_a: str | Path, dir_b: str | Path, split: str = "val2017",
                  names: tuple[str, str] | None = None) -> pd.DataFrame:
    """Side-by-side statistics: rows = statistic, columns = the two datasets (by directory name)."""
    if names is None:
        names = (Path(dir_a).name, Path(dir_b).name)
        if names[0] == names[1]:
            names = (f"{names[0]} (a)", f"{names[1]} (b)")
    columns = {name: box_stats(annotation_path(root, split))
               for name, root in zip(names, (dir_a, dir_b))}
    frame = pd.DataFrame(columns)
    frame.index.name = "statistic"
    return frame
