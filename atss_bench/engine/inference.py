"""Run a detector over the val split and score it with COCOeval.

Per image: the model's detections (boxes in the resized image) are mapped back to the original
image, clipped to it, and their contiguous labels turned into COCO category ids. With several test
scales (``data.test_extra_sizes``) every scale's detections are pooled, class-wise NMS
(``model.test.nms_thresh``) removes duplicates and the ``detections_per_img`` best are kept.
Distributed: each process runs its shard, rank 0 gathers the results, runs COCOeval and
broadcasts the metrics.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import batched_nms, box_convert, clip_boxes_to_image

from atss_bench.config import DataConfig, TestConfig
from atss_bench.data.transforms import map_boxes_to_original
from atss_bench.engine.distributed import DistInfo, broadcast_from_main, gather_to_main
from atss_bench.engine.evaluate import evaluate_coco
from atss_bench.engine.loaders import build_val_datasets, build_val_loader, val_image_ids

Detections = dict[str, torch.Tensor]  # boxes [N, 4] xyxy (original pixels), scores [N], labels [N]


@dataclass
class EvalResult:
    metrics: dict[str, float]
    evaluator: str
    num_images: int
    num_detections: int
    seconds: float


@torch.no_grad()
def predict_scale(model: nn.Module, loader: Any, device: torch.device,
                  amp: bool = False) -> dict[int, Detections]:
    """Detections per image id, in original image coordinates, for one test scale
    (``amp``: float16 autocast, CUDA only)."""
    results: dict[int, Detections] = {}
    use_amp = amp and device.type == "cuda"
    for images, targets in loader:
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            outputs = model([image.to(device) for image in images])
        for output, target in zip(outputs, targets):
            boxes = map_boxes_to_original(output["boxes"].float().cpu(), tuple(target["size"]),
                                          tuple(target["orig_size"]))
            results[int(target["image_id"])] = {
                "boxes": clip_boxes_to_image(boxes, tuple(target["orig_size"])),
                "scores": output["scores"].float().cpu(),
                "labels": output["labels"].cpu(),
            }
    return results


def merge_scales(per_scale: list[Detections], nms_thresh: float, max_dets: int) -> Detections:
    """Pool several scales' detections of one image: class-wise NMS, keep the ``max_dets`` best."""
    if len(per_scale) == 1:
        return per_scale[0]
    boxes = torch.cat([d["boxes"] for d in per_scale])
    scores = torch.cat([d["scores"] for d in per_scale])
    labels = torch.cat([d["labels"] for d in per_scale])
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_dets]  # sorted by score
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


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
    *, evaluator: str = "auto", amp: bool = False,
) -> EvalResult:
    """Detections on the val split (``data.val_images`` first images) -> COCOeval metrics."""
    started = time.perf_counter()
    datasets = build_val_datasets(root, data)
    image_ids = val_image_ids(datasets[0], data)
    model.eval()
    per_scale = [predict_scale(model, build_val_loader(ds, len(image_ids), data, dist_info),
                               dist_info.device, amp) for ds in datasets]
    cat_ids = datasets[0].contiguous_to_cat_id
    local: list[dict] = []
    for image_id in per_scale[0]:
        merged = merge_scales([dets[image_id] for dets in per_scale], test.nms_thresh,
                              test.detections_per_img)
        local.extend(to_coco_results(image_id, merged, cat_ids))
    gathered = gather_to_main(local, dist_info)
    payload = None
    if gathered is not None:
        detections = [det for part in gathered for det in part]
        metrics, name = evaluate_coco(datasets[0].coco.dataset, detections, image_ids=image_ids,
                                      evaluator=evaluator)
        payload = (metrics, name, len(detections))
    metrics, name, count = broadcast_from_main(payload, dist_info)
    return EvalResult(metrics, name, len(image_ids), count, time.perf_counter() - started)
