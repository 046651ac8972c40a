"""Synthetic detections for a COCO ground truth, to exercise and time COCO evaluators."""
from __future__ import annotations

import random


def perturbed_detections(gt: dict, seed: int = 0, per_object: int = 3,
                         clutter_per_image: int = 10) -> list[dict]:
    """Noisy copies of every GT box (some with the wrong class) plus random low-score boxes."""
    rng = random.Random(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    detections = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        for _ in range(per_object):
            detections.append({
                "image_id": ann["image_id"],
                "category_id": ann["category_id"] if rng.random() < 0.8 else rng.choice(cat_ids),
                "bbox": [x + rng.gauss(0, 0.1 * w), y + rng.gauss(0, 0.1 * h),
                         w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)],
                "score": rng.random()})
    for image in gt["images"]:
        for _ in range(clutter_per_image):
            w, h = rng.uniform(2, image["width"] / 2), rng.uniform(2, image["height"] / 2)
            detections.append({
                "image_id": image["id"], "category_id": rng.choice(cat_ids),
                "bbox": [rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h),
                         w, h], "score": 0.5 * rng.random()})
    return detections
