"""A tiny COCO-layout folder for dataset identity and preflight tests (no training).

train2017: a.jpg, b.png; val2017: c.jpg, d.png; one box each, category ids 3 and 7.
``variant`` changes one annotation's box: same layout, other content.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

FILES = {"train2017": ("a.jpg", "b.png"), "val2017": ("c.jpg", "d.png")}
CATEGORIES = [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]


def coco_payload(split: str, variant: int = 0) -> dict[str, Any]:
    base = 100 if split == "val2017" else 0
    images, anns = [], []
    for index, name in enumerate(FILES[split]):
        image_id = base + index + 1
        images.append({"id": image_id, "file_name": name, "width": 40, "height": 30})
        anns.append({"id": image_id, "image_id": image_id, "category_id": (3, 7)[index],
                     "bbox": [2.0 + variant, 3.0, 20.0, 15.0], "area": 300.0, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def write_tiny_coco(root: Path, variant: int = 0) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, names in FILES.items():
        (root / split).mkdir(exist_ok=True)
        for index, name in enumerate(names):
            Image.new("RGB", (40, 30), (10 * index, 120, 200)).save(root / split / name)
        write_annotations(root, split, coco_payload(split, variant))
    return root


def write_annotations(root: Path, split: str, payload: Any) -> Path:
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps(payload))
    return path
