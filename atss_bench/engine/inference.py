"""Run a detector over the val split and score it with COCOeval.

Per image and test pass (a scale of ``engine.tta.build_test_scales``, and its horizontal flip when
``model.test.aug.flip``): the model's detections (boxes in the resized image) are mirrored back
if the image was flipped, kept only within the scale's size range, mapped back to the original
image and clipped to it. The passes are merged (``engine.tta.merge_detections``: class-wise NMS
or box voting) and their contiguous labels turned into COCO category ids. One pass is the
detector's own output. Distributed: each process runs its shard, rank 0 gathers the results, runs
COCOeval and broadcasts the metrics.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import box_convert, clip_boxes_to_image

from atss_bench.config import DataConfig, TestConfig
from atss_bench.data.transforms import map_boxes_to_original
from atss_bench.engine.distributed import DistInfo, broadcast_from_main, gather_to_main
from atss_bench.engine.evaluate import evaluate_coco
from atss_bench.engine.loaders import build_val_datasets, build_val_loader, val_image_ids
from atss_bench.engine.monitor import EvalProgress
from atss_bench.engine.tta import (Detections, build_merge_settings,
                                   build_test_scales, filter_by_area, merge_detections,
                                   unflip_boxes)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    evaluator: str
    num_images: int
    num_detections: int
    seconds: float


@torch.no_grad()
def predict_scale(model: nn.Module, loader: Any, device: torch.device, amp: bool = False, *,
                  flip: bool = False,
                  area_range: tuple[float, float] | None = None) -> dict[int, Detections]:
    """Detections per image id, in original image coordinates, for one test pass: the loader's
    scale, on the horizontally flipped images when ``flip``, keeping the boxes whose sqrt-area
    (resized pixels) lies in ``area_range`` (``amp``: float16 autocast, CUDA only)."""
    results: dict[int, Detections] = {}
    use_amp = amp and device.type == "cuda"
    for images, targets in loader:
        if flip:
            images = [image.flip(-1) for image in images]
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            outputs = model([image.to(device) for image in images])
        for output, target in zip(outputs, targets):
            size, orig_size = tuple(target["size"]), tuple(target["orig_size"])
            dets = {"boxes": output["boxes"].float().cpu(),
                    "scores": output["scores"].float().cpu(), "labels": output["labels"].cpu()}
            if flip:
                dets["boxes"] = unflip_boxes(dets["boxes"], size[1])
            if area_range is not None:
                dets = filter_by_area(dets, area_range)
            boxes = map_boxes_to_original(dets["boxes"], size, orig_size)
            dets["boxes"] = clip_boxes_to_image(boxes, orig_size)
            results[int(target["image_id"])] = dets
    return results


def to_coco_results(image_id: int, dets: Detections, contiguous_to_cat_id: list[int]) -> list[dict]:
    """COCO result dicts (xywh boxes, COCO category ids) of one image."""
    xywh = box_convert(dets["boxes"], "xyxy", "xywh").tolist()
    scores = dets["scores"].tolist()
    labels = dets["labels"].tolist()
    return [{"image_id": image_id, "category_id": contiguous_to_cat_id[int(label)],
             "bbox": [round(v, 2) for v in box], "score": round(float(score), 5)}
            for box, score, label in zip(xywh, scores, labels)]


def evaluate_model(
    model: nn.Module, root: Path, data: DataConfig, test: TestConfig, dist_info: DistInfo,
    *, evaluator: str = "auto", amp: bool = False, progress: EvalProgress | None = None,
) -> EvalResult:
    """Detections on the val split (``data.val_images`` first images) -> COCOeval metrics;
    ``progress`` hears of each test pass and of COCOeval as they end."""
    started = time.perf_counter()
    progress = progress or EvalProgress(False)
    scales = build_test_scales(data, test.aug)
    datasets = build_val_datasets(root, data, [(s.min_size, s.max_size) for s in scales])
    image_ids = val_image_ids(datasets[0], data)
    model.eval()
    flips = (False, True) if test.aug.flip else (False,)
    progress.begin(len(scales) * len(flips) + 1)
    per_pass = []
    for scale, dataset in zip(scales, datasets):
        loader = build_val_loader(dataset, len(image_ids), data, dist_info)
        for flip in flips:
            per_pass.append(predict_scale(model, loader, dist_info.device, amp, flip=flip,
                                          area_range=scale.area_range))
            progress.phase(f"predict {scale.min_size}px" + (" flipped" if flip else ""),
                           f"{len(per_pass[-1])}/{len(image_ids)} images")
    settings = build_merge_settings(test)
    cat_ids = datasets[0].contiguous_to_cat_id
    local: list[dict] = []
    for image_id in per_pass[0]:
        merged = merge_detections([dets[image_id] for dets in per_pass], settings)
        local.extend(to_coco_results(image_id, merged, cat_ids))
    gathered = gather_to_main(local, dist_info)
    payload = None
    if gathered is not None:
        detections = [det for part in gathered for det in part]
        metrics, name = evaluate_coco(datasets[0].coco.dataset, detections, image_ids=image_ids,
                                      evaluator=evaluator)
        payload = (metrics, name, len(detections))
        progress.phase("COCOeval", f"{len(detections)} detections")
    metrics, name, count = broadcast_from_main(payload, dist_info)
    return EvalResult(metrics, name, len(image_ids), count, time.perf_counter() - started)
